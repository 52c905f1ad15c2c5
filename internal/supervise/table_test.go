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
	want := map[State]map[input]cell{
		Stopped: {inStart: {Starting, U}, inStop: {Stopped, N}, inRestart: {Starting, U}, inReload: {Stopped, K},
			inExited: {Stopped, N}, inReady: {Stopped, N}, inLiveness: {Stopped, N}, inDrained: {Stopped, N},
			inReadyDeadline: {Stopped, N}, inKillDeadline: {Stopped, N}, inBackoffDone: {Stopped, N}},
		Starting: {inStart: {Starting, C}, inStop: {Stopping, D}, inRestart: {Stopping, U}, inReload: {Stopping, U},
			inExited: {Restarting, N}, inReady: {Ready, N}, inLiveness: {Starting, N}, inDrained: {Starting, N},
			inReadyDeadline: {Stopping, N}, inKillDeadline: {Starting, N}, inBackoffDone: {Starting, N}},
		Ready: {inStart: {Ready, N}, inStop: {Stopping, D}, inRestart: {Stopping, U}, inReload: {Stopping, U},
			inExited: {Restarting, N}, inReady: {Ready, N}, inLiveness: {Ready, N}, inDrained: {Ready, N},
			inReadyDeadline: {Ready, N}, inKillDeadline: {Ready, N}, inBackoffDone: {Ready, N}},
		Draining: {inStart: {Draining, U}, inStop: {Draining, D}, inRestart: {Draining, U}, inReload: {Draining, K},
			inExited: {Stopped, N}, inReady: {Draining, N}, inLiveness: {Draining, N}, inDrained: {Stopping, N},
			inReadyDeadline: {Draining, N}, inKillDeadline: {Stopping, N}, inBackoffDone: {Draining, N}},
		Stopping: {inStart: {Stopping, U}, inStop: {Stopping, D}, inRestart: {Stopping, U}, inReload: {Stopping, K},
			inExited: {Stopped, N}, inReady: {Stopping, N}, inLiveness: {Stopping, N}, inDrained: {Stopping, N},
			inReadyDeadline: {Stopping, N}, inKillDeadline: {Stopping, N}, inBackoffDone: {Stopping, N}},
		Restarting: {inStart: {Starting, U}, inStop: {Stopped, D}, inRestart: {Starting, U}, inReload: {Starting, U},
			inExited: {Restarting, N}, inReady: {Restarting, N}, inLiveness: {Restarting, N}, inDrained: {Restarting, N},
			inReadyDeadline: {Restarting, N}, inKillDeadline: {Restarting, N}, inBackoffDone: {Starting, N}},
		Failed: {inStart: {Starting, U}, inStop: {Stopped, D}, inRestart: {Starting, U}, inReload: {Starting, U},
			inExited: {Failed, N}, inReady: {Failed, N}, inLiveness: {Failed, N}, inDrained: {Failed, N},
			inReadyDeadline: {Failed, N}, inKillDeadline: {Failed, N}, inBackoffDone: {Failed, N}},
	}
	for st := range NumStates {
		for in := range numInputs {
			t.Run(fmt.Sprintf("%s/%d", st, in), func(t *testing.T) {
				c, ok := want[st][in]
				if !ok {
					t.Fatalf("no expectation for %s × input %d", st, in)
				}
				h := newHarness(t)
				o, pid := into(h, st)
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
	switch st {
	case Stopped:
		h.startReady(spec)
		h.control("a", OpStop)
		h.expect("a", EvStopped)
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
