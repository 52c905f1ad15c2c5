package supervise

import (
	"errors"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
)

// The owner never waits on the outside world: a slow exec, port check or
// log, or an exited process whose output is still coming, leaves it
// answering requests and status. These tests hold each of them up until
// the owner has answered; an owner that waited for one would never answer,
// and the test fails at its (last-guard) deadline.

// answered asks for op and fails the test if the owner does not answer.
func (h *harness) answered(name string, op Op) Decision {
	h.t.Helper()
	type answer struct {
		d   Decision
		err error
	}
	got := make(chan answer, 1)
	go func() {
		d, err := h.sup.Control(name, op)
		got <- answer{d, err}
	}()
	select {
	case a := <-got:
		if a.err != nil {
			h.t.Fatalf("%s %s: %v", op, name, a.err)
		}
		return a.d
	case <-time.After(30 * time.Second):
		h.t.Fatalf("%s %s: no answer while the owner's outside work is held up", op, name)
		return Decision{}
	}
}

// status reads name's row, failing the test if status does not answer.
func (h *harness) status(name string) Snapshot {
	h.t.Helper()
	got := make(chan Snapshot, 1)
	go func() { got <- h.state(name) }()
	select {
	case s := <-got:
		return s
	case <-time.After(30 * time.Second):
		h.t.Fatalf("status of %s: no answer", name)
		return Snapshot{}
	}
}

// A slow start (the exec, or the port check that walks /proc) happens in
// the starter: the owner answers status and a stop meanwhile, and the stop
// has its way once the process is there (llama-server exits 0 on SIGTERM).
func TestOwnerAnswersWhileStarting(t *testing.T) {
	for _, slow := range []string{"exec", "port check"} {
		t.Run(slow, func(t *testing.T) {
			h := newHarness(t)
			release := func() {}
			switch slow {
			case "exec":
				h.starter.gate = make(chan struct{})
				release = h.starter.release
			case "port check":
				gate := make(chan struct{})
				h.portsMu.Lock()
				h.portGate = gate
				h.portsMu.Unlock()
				release = func() { close(gate) }
			}
			upserted := make(chan error, 1)
			go func() {
				_, err := h.sup.Upsert([]config.Instance{h.spec("a", 8001, "always")})
				upserted <- err
			}()
			select {
			case err := <-upserted:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(30 * time.Second):
				release() // for the cleanup's shutdown
				t.Fatal("Upsert: no answer while the start is held up")
			}
			if s := h.status("a"); s.State != Starting || s.PID != 0 || !s.WantUp {
				t.Errorf("while its start is held up: %+v, want starting with no pid yet", s)
			}
			if d := h.answered("a", OpStart); d.Saw != launching || d.Will != OutcomeUp {
				t.Errorf("start while launching: %+v", d)
			}
			if d := h.answered("a", OpStop); d.Saw != launching || d.Will != OutcomeDown {
				t.Errorf("stop while launching: %+v", d)
			}
			if s := h.status("a"); s.WantUp {
				t.Errorf("after the stop: %+v", s)
			}
			release()
			st := h.expect("a", EvStarted)
			if e := h.expect("a", EvStopped); e.Reason != ReasonStopRequested || e.Exit != "exit code 0" {
				t.Errorf("stopped %+v", e)
			}
			if got := h.starter.proc(st.PID).got(); !slices.Equal(got, []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL}) {
				t.Errorf("signals %v: the stop's SIGTERM, then SIGKILL for its group", got)
			}
			if s := h.status("a"); s.State != Stopped || s.WantUp || s.PID != 0 {
				t.Errorf("at the end: %+v", s)
			}
		})
	}
}

// A reload that changes the spec while the old one is being started
// restarts the new process on the new spec once it is there.
func TestReloadWhileLaunching(t *testing.T) {
	h := newHarness(t)
	h.starter.gate = make(chan struct{})
	spec := h.spec("a", 8001, "on-failure")
	if _, err := h.sup.Apply([]config.Instance{spec}); err != nil {
		t.Fatal(err)
	}
	spec.Cmd = []string{"--port", "1", "--new"}
	res, err := h.sup.Apply([]config.Instance{spec})
	if err != nil {
		t.Fatal(err)
	}
	if d := res.Decisions["a"]; d.Saw != launching || d.Will != OutcomeUp {
		t.Errorf("reload while launching: %+v", d)
	}
	h.starter.release()
	old := h.expect("a", EvStarted)
	if ex := h.expect("a", EvExited); ex.PID != old.PID || ex.Reason != ReasonRestartRequested {
		t.Errorf("the process on the old spec: %+v", ex)
	}
	p := h.ready("a")
	h.starter.mu.Lock()
	ran := h.starter.specs[p.pid]
	h.starter.mu.Unlock()
	if !ran.Same(spec) {
		t.Errorf("ready on %v, want the reloaded %v", ran.Cmd, spec.Cmd)
	}
}

// A stop that comes while the start is on its way, and a start that then
// fails: the instance is down as asked, and the failure is said with it,
// not swallowed (a container whose command exits at once stops its
// instances while they are starting).
func TestStopWhileLaunchingAStartThatFails(t *testing.T) {
	h := newHarness(t)
	h.starter.gate = make(chan struct{})
	h.starter.err = errors.New(`exec: "/nonexistent/llama-server": no such file`)
	if _, err := h.sup.Apply([]config.Instance{h.spec("a", 8001, "on-failure")}); err != nil {
		t.Fatal(err)
	}
	if d := h.answered("a", OpStop); d.Saw != launching || d.Will != OutcomeDown {
		t.Fatalf("stop while launching: %+v", d)
	}
	h.starter.release()
	st := h.expect("a", EvStopped)
	line, isErr := st.Line()
	if !isErr || !strings.Contains(line, "a failed to start (") || !strings.Contains(line, "no such file") {
		t.Errorf("line %q (error %v)", line, isErr)
	}
	if s := h.status("a"); s.State != Stopped || s.WantUp {
		t.Errorf("after: %+v", s)
	}
}

// An exited process whose pipe is still held open (a daemonised
// grandchild) is judged once its output ends: the owner answers
// meanwhile, the operator's word counts, and what it wrote after its exit
// is in the log before EvStopped.
func TestOwnerAnswersWhileOutputFlushes(t *testing.T) {
	t.Run("stop, then EOF", func(t *testing.T) {
		h := newHarness(t)
		h.starter.holdPipe = true
		spec := h.spec("a", 8001, "always")
		p := h.startReady(spec)
		if d := h.answered("a", OpStop); d.Will != OutcomeDown {
			t.Fatalf("stop: %+v", d)
		}
		h.waitUntil("its exit", func() bool { return h.status("a").PID == 0 })
		if s := h.status("a"); s.State != Stopping || s.WantUp {
			t.Errorf("exited, output still coming: %+v, want stopping", s)
		}
		if d := h.answered("a", OpStop); d.Saw != flushing || d.Will != OutcomeDown {
			t.Errorf("a second stop while its output comes: %+v", d)
		}
		p.out.WriteString("last words\n")
		p.out.Close() // EOF: its output is all in
		h.expect("a", EvStopped)
		b, _ := os.ReadFile(spec.LogFile)
		if !strings.Contains(string(b), "last words") {
			t.Errorf("the log at EvStopped lacks the output written after the exit: %q", b)
		}
	})
	t.Run("start wins, judged at the deadline", func(t *testing.T) {
		h := newHarness(t)
		h.starter.holdPipe = true
		p := h.startReady(h.spec("a", 8001, "on-failure"))
		t.Cleanup(func() { p.out.Close() })
		h.answered("a", OpStop)
		h.waitUntil("its exit", func() bool { return h.status("a").PID == 0 })
		if d := h.answered("a", OpStart); d.Saw != flushing || d.Will != OutcomeUp {
			t.Errorf("start while its output comes: %+v", d)
		}
		// The pipe stays open: the deadline (on the clock the owner was
		// given) ends the wait, and the last word, start, has its way.
		h.clock.expectTimer(t, flushLimit)
		h.clock.Advance(flushLimit)
		if ex := h.expect("a", EvExited); ex.State != Starting || ex.Reason != ReasonStopRequested {
			t.Errorf("exit %+v: stopped as asked, then started again as asked", ex)
		}
		if q := h.ready("a"); q.pid == p.pid {
			t.Error("the same process")
		}
	})
}
