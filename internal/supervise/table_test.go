package supervise

import (
	"fmt"
	"github.com/llamaboot/llamaboot/internal/config"
	"syscall"
	"testing"
	"time"
)

// TestEveryCell drives an instance into each state and hands its owner
// each input, checking the state it leads to and, for requests, what the
// owner answered. The fakes exit 0 on SIGTERM, as an idle llama-server
// does. A cell missing from want is a test failure: every cell is
// decided, here as in the table.
func TestEveryCell(t *testing.T) {
	type cell struct {
		next State
		will Outcome
	}
	D, K, U, C, N := OutcomeDown, OutcomeKeptDown, OutcomeUp, OutcomeCurrent, OutcomeDone
	L, F := launching, flushing
	want := map[State]map[input]cell{
		Stopped: {inStart: {L, U}, inStop: {Stopped, N}, inRestart: {L, U}, inReload: {Stopped, K},
			inExited: {Stopped, N}, inReady: {Stopped, N}, inLiveness: {Stopped, N}, inDrained: {Stopped, N},
			inReadyDeadline: {Stopped, N}, inKillDeadline: {Stopped, N}, inBackoffDone: {Stopped, N},
			inLaunched: {Stopped, N}, inFlushed: {Stopped, N}, inFlushDeadline: {Stopped, N}},
		L: {inStart: {L, U}, inStop: {L, D}, inRestart: {L, U}, inReload: {L, U},
			inExited: {L, N}, inReady: {L, N}, inLiveness: {L, N}, inDrained: {L, N},
			inReadyDeadline: {L, N}, inKillDeadline: {L, N}, inBackoffDone: {L, N},
			inLaunched: {Failed, N}, inFlushed: {L, N}, inFlushDeadline: {L, N}},
		Starting: {inStart: {Starting, C}, inStop: {Stopping, D}, inRestart: {Stopping, U}, inReload: {Stopping, U},
			inExited: {F, N}, inReady: {Ready, N}, inLiveness: {Starting, N}, inDrained: {Starting, N},
			inReadyDeadline: {Stopping, N}, inKillDeadline: {Starting, N}, inBackoffDone: {Starting, N},
			inLaunched: {Starting, N}, inFlushed: {Starting, N}, inFlushDeadline: {Starting, N}},
		Ready: {inStart: {Ready, N}, inStop: {Stopping, D}, inRestart: {Stopping, U}, inReload: {Stopping, U},
			inExited: {F, N}, inReady: {Ready, N}, inLiveness: {Ready, N}, inDrained: {Ready, N},
			inReadyDeadline: {Ready, N}, inKillDeadline: {Ready, N}, inBackoffDone: {Ready, N},
			inLaunched: {Ready, N}, inFlushed: {Ready, N}, inFlushDeadline: {Ready, N}},
		Draining: {inStart: {Draining, U}, inStop: {Draining, D}, inRestart: {Draining, U}, inReload: {Draining, K},
			inExited: {F, N}, inReady: {Draining, N}, inLiveness: {Draining, N}, inDrained: {Stopping, N},
			inReadyDeadline: {Draining, N}, inKillDeadline: {Stopping, N}, inBackoffDone: {Draining, N},
			inLaunched: {Draining, N}, inFlushed: {Draining, N}, inFlushDeadline: {Draining, N}},
		Stopping: {inStart: {Stopping, U}, inStop: {Stopping, D}, inRestart: {Stopping, U}, inReload: {Stopping, K},
			inExited: {F, N}, inReady: {Stopping, N}, inLiveness: {Stopping, N}, inDrained: {Stopping, N},
			inReadyDeadline: {Stopping, N}, inKillDeadline: {Stopping, N}, inBackoffDone: {Stopping, N},
			inLaunched: {Stopping, N}, inFlushed: {Stopping, N}, inFlushDeadline: {Stopping, N}},
		// A crash under on-failure whose output is still coming: judged
		// at EOF or its deadline (a restart after the backoff).
		F: {inStart: {F, U}, inStop: {F, D}, inRestart: {F, U}, inReload: {F, U},
			inExited: {F, N}, inReady: {F, N}, inLiveness: {F, N}, inDrained: {F, N},
			inReadyDeadline: {F, N}, inKillDeadline: {F, N}, inBackoffDone: {F, N},
			inLaunched: {F, N}, inFlushed: {Restarting, N}, inFlushDeadline: {Restarting, N}},
		Restarting: {inStart: {L, U}, inStop: {Stopped, D}, inRestart: {L, U}, inReload: {L, U},
			inExited: {Restarting, N}, inReady: {Restarting, N}, inLiveness: {Restarting, N}, inDrained: {Restarting, N},
			inReadyDeadline: {Restarting, N}, inKillDeadline: {Restarting, N}, inBackoffDone: {L, N},
			inLaunched: {Restarting, N}, inFlushed: {Restarting, N}, inFlushDeadline: {Restarting, N}},
		Failed: {inStart: {L, U}, inStop: {Stopped, D}, inRestart: {L, U}, inReload: {L, U},
			inExited: {Failed, N}, inReady: {Failed, N}, inLiveness: {Failed, N}, inDrained: {Failed, N},
			inReadyDeadline: {Failed, N}, inKillDeadline: {Failed, N}, inBackoffDone: {Failed, N},
			inLaunched: {Failed, N}, inFlushed: {Failed, N}, inFlushDeadline: {Failed, N}},
	}
	for st := range numStates {
		for in := range numInputs {
			t.Run(fmt.Sprintf("%s/%d", st, in), func(t *testing.T) {
				c, ok := want[st][in]
				if !ok {
					t.Fatalf("no expectation for %s × input %d", st, in)
				}
				h := newHarness(t)
				o, pid := into(h, st)
				if st == launching && in == inLaunched {
					// The starter's own answer (no one else sends it):
					// the exec failed.
					h.starter.setErr(errBoom)
					h.starter.release()
					if e := h.expect("a", EvFailed); e.Reason != ReasonStartFailed || e.State != c.next {
						t.Errorf("launching × launched (failed): %+v, want → %s", e, c.next)
					}
					return
				}
				reply := make(chan Decision, 1)
				m := msg{in: in, pid: pid, reply: reply}
				switch in {
				case inStart:
					m.op = OpStart
				case inStop:
					m.op = OpStop
				case inRestart:
					m.op = OpRestart
				case inReload:
					spec := o.spec // read before: the owner is idle here
					spec.Cmd = append([]string{"--changed"}, spec.Cmd...)
					m.spec = &spec
				case inExited:
					m.ws = syscall.WaitStatus(1 << 8)
				case inLiveness:
					m.live = &LiveProbe{}
				case inDrained:
					m.drain = &drainResult{}
				case inLaunched: // a stray answer: none is awaited outside launching
					m.launch = &launchResult{spec: o.spec, reason: ReasonPortTaken, err: errBoom}
				}
				if err := o.send(m); err != nil {
					t.Fatal(err)
				}
				var d Decision
				select {
				case d = <-reply:
				case <-time.After(5 * time.Second):
					t.Fatal("no answer")
				}
				if d.Saw != st {
					t.Fatalf("the owner saw %s, the test meant %s", d.Saw, st)
				}
				if d.Now != c.next || d.Will != c.will {
					t.Errorf("%s × %d: → %s (%v), want → %s (%v)", st, in, d.Now, d.Will, c.next, c.will)
				}
			})
		}
	}
}

// A ready instance with drain_timeout drains before it stops.
func TestReadyDrainsOnStop(t *testing.T) {
	for _, op := range []Op{OpStop, OpRestart} {
		h := newHarness(t)
		spec := h.spec("a", 8001, "on-failure")
		spec.DrainTimeout = 5 * time.Second
		h.startReady(spec)
		h.live.set(func(f *fakeLive) { f.busy = 1 })
		if d := h.control("a", op); d.Saw != Ready || d.Now != Draining {
			t.Errorf("%s of a ready instance: %+v", op, d)
		}
	}
}

// control asks for op and returns the owner's answer.
func (h *harness) control(name string, op Op) Decision {
	h.t.Helper()
	d, err := h.sup.Control(name, op)
	if err != nil {
		h.t.Fatal(err)
	}
	return d
}

// into brings instance a into st (want-down states by a stop) and
// returns its owner, idle, with the current process's pid (0: none).
func into(h *harness, st State) (*owner, int) {
	h.t.Helper()
	spec := h.spec("a", 8001, "on-failure")
	var p *fakeProc
	if st.Running() {
		// Its pipe outlives it, so that an exit is judged only at EOF,
		// which the test gives at its end: a SIGKILL to the group (on
		// every exit) would close it at a time of its own.
		h.starter.holdPipe = true
		h.t.Cleanup(func() { p.out.Close() })
	}
	switch st {
	case Stopped:
		h.startReady(spec)
		h.control("a", OpStop)
		h.expect("a", EvStopped)
	case launching:
		// The exec is slow: the owner waits for the starter's answer,
		// which comes (a failed start) once the test is over.
		h.starter.gate = make(chan struct{})
		h.t.Cleanup(func() {
			h.starter.setErr(errBoom)
			h.starter.release()
		})
		if _, err := h.sup.Upsert([]config.Instance{spec}); err != nil {
			h.t.Fatal(err)
		}
	case Starting:
		if _, err := h.sup.Upsert([]config.Instance{spec}); err != nil {
			h.t.Fatal(err)
		}
		ev := h.expect("a", EvStarted)
		p = h.starter.proc(ev.PID)
	case Ready:
		p = h.startReady(spec)
	case Draining:
		spec.DrainTimeout = 5 * time.Second
		p = h.startReady(spec)
		h.live.set(func(f *fakeLive) { f.busy = 1 })
		h.control("a", OpStop)
		h.waitUntil("draining", func() bool { return h.state("a").State == Draining })
	case Stopping:
		h.starter.ignoreTerm = true
		p = h.startReady(spec)
		h.control("a", OpStop)
		h.waitUntil("stopping", func() bool { return h.state("a").State == Stopping })
	case flushing:
		// It crashed; its pipe is held open (a grandchild): the exit is
		// judged once its output is in.
		h.starter.holdPipe = true
		q := h.startReady(spec)
		h.t.Cleanup(func() { q.out.Close() })
		q.exit(1)
		h.waitUntil("flushing", func() bool { s := h.state("a"); return s.State == Stopping && s.PID == 0 })
	case Restarting:
		p = h.startReady(spec)
		p.exit(1)
		h.expect("a", EvRestarting)
		p = nil
	case Failed:
		spec.Restart = "never"
		p = h.startReady(spec)
		p.exit(1)
		h.expect("a", EvFailed)
		p = nil
	}
	h.sup.mu.Lock()
	o := h.sup.owners["a"].o
	h.sup.mu.Unlock()
	if p == nil {
		return o, 0
	}
	return o, p.pid
}
