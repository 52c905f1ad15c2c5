package supervise

import (
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/launch"
	"github.com/llamaboot/llamaboot/internal/testutil"
)

func TestStartThenReady(t *testing.T) {
	h := newHarness(t)
	spec := h.spec("a", 8001, "on-failure")
	if _, err := h.sup.Apply([]config.Instance{spec}); err != nil {
		t.Fatal(err)
	}
	ev := h.expect("a", EvStarted)
	if s := h.state("a"); s.State != Starting || !s.WantUp || s.PID != ev.PID {
		t.Fatalf("after start: %+v", s)
	}
	h.clock.Advance(1500 * time.Millisecond)
	h.probe.report(t, ev.PID, ProbeReady)
	r := h.expect("a", EvReady)
	if r.Took != 1500*time.Millisecond {
		t.Errorf("ready took %s, want the 1.5s the clock moved", r.Took)
	}
	if s := h.state("a"); s.State != Ready || s.PID != ev.PID {
		t.Errorf("after ready: %+v", s)
	}
	// The child's output went through the pipe into the log file (all
	// of it once the process is down).
	_, _ = h.sup.Control("a", OpStop)
	h.expect("a", EvStopped)
	b, _ := os.ReadFile(spec.LogFile)
	if !strings.Contains(string(b), "output of a") || !strings.Contains(string(b), "[llamaboot] ") {
		t.Errorf("log file: %q", b)
	}
}

func TestStopKeepsItDown(t *testing.T) {
	h := newHarness(t)
	p := h.startReady(h.spec("a", 8001, "always"))
	if _, err := h.sup.Control("a", OpStop); err != nil {
		t.Fatal(err)
	}
	if e := h.expect("a", EvRequested); e.Op != OpStop {
		t.Errorf("requested %+v", e)
	}
	st := h.expect("a", EvStopped)
	if st.Exit != "exit code 0" || st.Reason != ReasonStopRequested {
		t.Errorf("stopped event %+v", st)
	}
	if got := p.got(); !slices.Equal(got, []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL}) {
		t.Errorf("signals %v: want SIGTERM, then SIGKILL for what is left of its group", got)
	}
	s := h.state("a")
	if s.State != Stopped || s.WantUp || s.PID != 0 || s.Restarts != 0 || s.LastReason != ReasonStopRequested {
		t.Errorf("after stop: %+v", s)
	}
	// Even with restart = always, nothing comes back.
	h.clock.Advance(time.Hour)
	if _, err := h.sup.Control("a", OpStart); err != nil {
		t.Fatal(err)
	}
	if e := h.expect("a", EvRequested); e.Op != OpStart {
		t.Errorf("requested %+v", e)
	}
	if e := h.next("a"); e.Kind != EvStarted {
		t.Errorf("after stop, the first thing after start must be the start, got %+v", e)
	}
}

func TestStopKillsAfterGrace(t *testing.T) {
	h := newHarness(t)
	h.starter.ignoreTerm = true
	p := h.startReady(h.spec("a", 8001, "on-failure"))
	_, _ = h.sup.Control("a", OpStop)
	h.clock.expectTimer(t, 5*time.Second)
	h.expect("a", EvRequested) // events go out after the status is updated
	if s := h.state("a"); s.State != Stopping || s.PID == 0 {
		t.Errorf("while stopping: %+v", s)
	}
	h.clock.Advance(5 * time.Second)
	k := h.expect("a", EvKilled)
	if k.Grace != 5*time.Second || k.PID != p.pid {
		t.Errorf("killed event %+v", k)
	}
	if line, _ := k.Line(); line != "pid 1001 still running after 5s: SIGKILL" {
		t.Errorf("line %q", line)
	}
	if e := h.expect("a", EvStopped); e.Exit != "killed by SIGKILL" {
		t.Errorf("stopped %+v", e)
	}
}

func TestRestartRestartsWhateverThePolicy(t *testing.T) {
	for _, policy := range []string{"on-failure", "never", "always"} {
		t.Run(policy, func(t *testing.T) {
			h := newHarness(t)
			first := h.startReady(h.spec("a", 8001, policy))
			if _, err := h.sup.Control("a", OpRestart); err != nil {
				t.Fatal(err)
			}
			ex := h.expect("a", EvExited)
			if ex.Reason != ReasonRestartRequested || ex.PID != first.pid {
				t.Errorf("exit event %+v", ex)
			}
			if line, _ := ex.Line(); line != "" {
				t.Errorf("a requested restart is not reported as an exit: %q", line)
			}
			second := h.ready("a")
			if second.pid == first.pid {
				t.Fatal("same process")
			}
			if s := h.state("a"); s.State != Ready || s.Restarts != 0 || !s.WantUp {
				t.Errorf("after restart: %+v (a requested restart is not a crash)", s)
			}
		})
	}
}

func TestCrashBackoffThenCrashLoop(t *testing.T) {
	h := newHarness(t)
	spec := h.spec("a", 8001, "on-failure")
	if _, err := h.sup.Apply([]config.Instance{spec}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(spec.LogFile, []byte("line 1\nlast words\n"), 0o644)
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		ev := h.expect("a", EvStarted)
		h.clock.Advance(100 * time.Millisecond)
		h.starter.proc(ev.PID).exit(3)
		ex := h.expect("a", EvExited)
		if ex.Exit != "exit code 3" || ex.Reason != ReasonCrash || ex.Ran != 100*time.Millisecond {
			t.Errorf("exit %d: %+v", i, ex)
		}
		r := h.expect("a", EvRestarting)
		if r.Delay != want {
			t.Errorf("crash %d: delay %s, want %s", i+1, r.Delay, want)
		}
		if s := h.state("a"); s.State != Restarting || s.Restarts != i+1 || s.PID != 0 || s.LastExit != "exit code 3" {
			t.Errorf("after crash %d: %+v", i+1, s)
		}
		h.clock.Advance(want)
	}
	ev := h.expect("a", EvStarted)
	h.starter.proc(ev.PID).exit(3)
	f := h.expect("a", EvFailed)
	if f.Quick != 5 || !strings.Contains(f.LogTail, "last words") {
		t.Errorf("failed event %+v", f)
	}
	if line, isErr := f.Line(); !isErr || !strings.Contains(line, "a failed: 5 quick crashes in a row") {
		t.Errorf("line %q", line)
	}
	if s := h.state("a"); s.State != Failed || s.Restarts != 4 {
		t.Errorf("after the crash loop: %+v", s)
	}
	// restart tries again, from a clean count.
	_, _ = h.sup.Control("a", OpRestart)
	h.ready("a")
}

func TestSlowCrashesDoNotLoop(t *testing.T) {
	h := newHarness(t)
	h.sup.Apply([]config.Instance{h.spec("a", 8001, "on-failure")})
	for range 7 {
		ev := h.expect("a", EvStarted)
		h.clock.Advance(time.Minute) // ran long: not a quick crash
		h.starter.proc(ev.PID).exit(1)
		if r := h.expect("a", EvRestarting); r.Delay != time.Second {
			t.Fatalf("delay %s after a long run", r.Delay)
		}
		h.clock.Advance(time.Second)
	}
}

func TestRestartPolicies(t *testing.T) {
	for _, c := range []struct {
		policy string
		code   int
		want   State
	}{
		{"on-failure", 0, Stopped},
		{"on-failure", 1, Restarting},
		{"always", 0, Restarting},
		{"never", 0, Stopped},
		{"never", 2, Failed},
	} {
		t.Run(c.policy, func(t *testing.T) {
			h := newHarness(t)
			p := h.startReady(h.spec("a", 8001, c.policy))
			p.exit(c.code)
			ex := h.expect("a", EvExited)
			if ex.State != c.want {
				t.Errorf("exit %d under %s: %s, want %s", c.code, c.policy, ex.State, c.want)
			}
			if s := h.state("a"); s.State != c.want {
				t.Errorf("state %s", s.State)
			}
			// A clean exit is not a crash.
			want := map[bool]Reason{true: ReasonExited, false: ReasonCrash}[c.code == 0]
			if s := h.state("a"); ex.Reason != want || s.LastReason != want {
				t.Errorf("exit %d: reason %s / %s, want %s", c.code, ex.Reason, s.LastReason, want)
			}
		})
	}
}

// A loop of quick ends is named for what they were: clean exits under
// "always", load timeouts, crashes, or a mix.
func TestLoopIsNamedForItsEnds(t *testing.T) {
	for _, c := range []struct {
		name   string
		policy string
		ends   []string // "exit0", "crash", "timeout"
		want   string
	}{
		{"clean exits", "always", []string{"exit0", "exit0", "exit0"}, "a failed: 3 quick clean exits in a row"},
		{"load timeouts", "on-failure", []string{"timeout", "timeout", "timeout"}, "a failed: 3 load timeouts in a row"},
		{"crashes", "on-failure", []string{"crash", "crash", "crash"}, "a failed: 3 quick crashes in a row"},
		{"mixed", "on-failure", []string{"crash", "timeout", "crash"}, "a failed: 3 quick ends in a row (2 crashes, 1 load timeout)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			pol := testPolicy
			pol.CrashLoop = 3
			h.sup.policy = pol.withDefaults()
			spec := h.spec("a", 8001, c.policy)
			spec.ReadyTimeout = time.Second // shorter than QuickCrash: a timeout is a quick end
			h.sup.Apply([]config.Instance{spec})
			for i, end := range c.ends {
				ev := h.expect("a", EvStarted)
				switch end {
				case "exit0", "crash":
					h.clock.Advance(100 * time.Millisecond)
					h.starter.proc(ev.PID).exit(map[string]int{"exit0": 0, "crash": 1}[end])
				case "timeout":
					h.clock.expectTimer(t, time.Second)
					h.clock.Advance(time.Second)
					h.expect("a", EvNotReady)
				}
				if i == len(c.ends)-1 {
					break
				}
				r := h.expect("a", EvRestarting)
				h.clock.Advance(r.Delay)
			}
			f := h.expect("a", EvFailed)
			if line, _ := f.Line(); !strings.HasPrefix(line, c.want+"; not restarting") {
				t.Errorf("line %q, want %q", line, c.want)
			}
		})
	}
}

func TestLoadTimeoutRestarts(t *testing.T) {
	h := newHarness(t)
	spec := h.spec("a", 8001, "on-failure")
	h.sup.Apply([]config.Instance{spec})
	ev := h.expect("a", EvStarted)
	h.clock.expectTimer(t, time.Minute)
	h.clock.Advance(time.Minute)
	nr := h.expect("a", EvNotReady)
	if line, isErr := nr.Line(); !isErr || line != "a: not ready after 1m0s; restarting it" {
		t.Errorf("line %q", line)
	}
	// It exits 0 on SIGTERM; a load timeout is still a failure.
	h.starter.proc(ev.PID).exit(0)
	ex := h.expect("a", EvExited)
	if ex.Reason != ReasonLoadTimeout || ex.State != Restarting {
		t.Errorf("exit after the load timeout: %+v", ex)
	}
	// A late probe result about the old process changes nothing.
	h.probe.report(t, ev.PID, ProbeReady)
	if s := h.state("a"); s.State != Restarting || s.LastReason != ReasonLoadTimeout {
		t.Errorf("state %+v", s)
	}
	// Running again, it still says why the last process ended.
	h.clock.Advance(time.Second)
	h.ready("a")
	if s := h.state("a"); s.State != Ready || s.LastReason != ReasonLoadTimeout || s.LastExit == "" {
		t.Errorf("running again: %+v", s)
	}
}

func TestPortTakenFails(t *testing.T) {
	h := newHarness(t)
	h.ports[8001] = &launch.PortTakenError{Instance: "a", Addr: "127.0.0.1:8001", Holder: "pid 7 (nginx)"}
	h.sup.Apply([]config.Instance{h.spec("a", 8001, "always")})
	f := h.expect("a", EvFailed)
	if f.Reason != ReasonPortTaken {
		t.Errorf("%+v", f)
	}
	s := h.state("a")
	if s.State != Failed || !strings.Contains(s.Err, "port 127.0.0.1:8001 is already in use by pid 7 (nginx)") {
		t.Errorf("%+v", s)
	}
	// Once the port is free, start brings it up.
	h.portsMu.Lock()
	delete(h.ports, 8001)
	h.portsMu.Unlock()
	_, _ = h.sup.Control("a", OpStart)
	h.ready("a")
}

func TestStartFailure(t *testing.T) {
	h := newHarness(t)
	h.starter.setErr(errBoom)
	h.sup.Apply([]config.Instance{h.spec("a", 8001, "always")})
	f := h.expect("a", EvFailed)
	if f.Reason != ReasonStartFailed || !errors.Is(f.Err, errBoom) {
		t.Errorf("%+v", f)
	}
	if line, _ := f.Line(); line != "a failed: start /x/llama-server: boom" {
		t.Errorf("line %q", line)
	}
	// A log file that cannot be opened is a start failure too.
	h.starter.setErr(nil)
	bad := h.spec("b", 8002, "always")
	bad.LogFile = "/proc/self/nope/b.log"
	h.sup.Upsert([]config.Instance{bad})
	f = h.expect("b", EvFailed)
	// The line names the instance and the dir once: "b failed: mkdir …".
	if line, _ := f.Line(); f.Reason != ReasonStartFailed || !regexp.MustCompile(`^b failed: mkdir /proc/\S+/nope: `).MatchString(line) || strings.Count(line, "b\"") > 0 {
		t.Errorf("%+v %q", f, line)
	}
}

func TestStopDuringBackoffAndControlFromEveryState(t *testing.T) {
	h := newHarness(t)
	p := h.startReady(h.spec("a", 8001, "on-failure"))
	p.exit(1)
	h.expect("a", EvRestarting)
	_, _ = h.sup.Control("a", OpStop)
	if e := h.expect("a", EvStopped); e.State != Stopped {
		t.Errorf("%+v", e)
	}
	h.clock.Advance(time.Hour) // the backoff timer is void
	if d := h.control("a", OpStop); d.Saw != Stopped || d.Now != Stopped || d.Will != OutcomeDone || d.Note != "already stopped" {
		t.Errorf("stop of a stopped instance: %+v", d)
	}
	_, _ = h.sup.Control("a", OpRestart)
	p = h.ready("a")
	p.exit(1)
	h.expect("a", EvRestarting)
	_, _ = h.sup.Control("a", OpStart) // start during backoff: at once
	p = h.ready("a")
	if s := h.state("a"); s.Restarts != 2 {
		t.Errorf("restarts %d, want the two crashes", s.Restarts)
	}
	if d := h.control("a", OpStart); d.Saw != Ready || d.Now != Ready || d.Will != OutcomeDone || d.Note != "already ready" {
		t.Errorf("start of a ready instance: %+v", d)
	}
	if s := h.state("a"); s.State != Ready || s.PID != p.pid {
		t.Errorf("%+v", s)
	}
}

func TestRequestsWhileStopping(t *testing.T) {
	h := newHarness(t)
	h.starter.ignoreTerm = true
	p := h.startReady(h.spec("a", 8001, "never"))
	// stop, then start before it has exited: it comes back after the exit.
	_, _ = h.sup.Control("a", OpStop)
	_, _ = h.sup.Control("a", OpStart)
	h.expect("a", EvRequested)
	h.expect("a", EvRequested)
	p.exit(0)
	p = h.ready("a")
	// restart, then stop before it has exited: it stays down.
	_, _ = h.sup.Control("a", OpRestart)
	_, _ = h.sup.Control("a", OpStop)
	h.expect("a", EvRequested)
	h.expect("a", EvRequested)
	p.exit(0)
	if e := h.expect("a", EvStopped); e.Reason != ReasonStopRequested {
		t.Errorf("%+v", e)
	}
	if s := h.state("a"); s.State != Stopped || s.WantUp {
		t.Errorf("%+v", s)
	}
}

func TestApplyDiffsByName(t *testing.T) {
	h := newHarness(t)
	a, b := h.spec("a", 8001, "on-failure"), h.spec("b", 8002, "on-failure")
	res, err := h.sup.Apply([]config.Instance{a, b})
	if err != nil || !slices.Equal(res.Added, []string{"a", "b"}) {
		t.Fatalf("%+v %v", res, err)
	}
	pa, pb := h.ready("a"), h.ready("b")

	// Same a but from another position in the file: unchanged. b gets a
	// new argument: changed. c is new.
	a2 := a
	a2.Pos = config.Pos{File: "other.toml", Line: 9}
	b2 := b
	b2.Cmd = append(slices.Clone(b.Cmd), "--ctx-size", "8192")
	c := h.spec("c", 8003, "on-failure")
	res, err = h.sup.Apply([]config.Instance{a2, b2, c})
	if err != nil || !slices.Equal(res.Unchanged, []string{"a"}) || !slices.Equal(res.Changed, []string{"b"}) || !slices.Equal(res.Added, []string{"c"}) {
		t.Fatalf("%+v %v", res, err)
	}
	pb2 := h.ready("b")
	h.ready("c")
	if got := h.starter.specs[pb2.pid].Cmd; !slices.Contains(got, "8192") {
		t.Errorf("b restarted with %q, not the new spec", got)
	}
	if !slices.Contains(pb.got(), syscall.SIGTERM) || len(pa.got()) != 0 {
		t.Errorf("old b signals %v, a signals %v", pb.got(), pa.got())
	}

	res, _ = h.sup.Apply([]config.Instance{a2})
	if !slices.Equal(res.Removed, []string{"b", "c"}) {
		t.Fatalf("%+v", res)
	}
	h.expect("b", EvRemoved)
	h.expect("c", EvRemoved)
	names := func() []string {
		var n []string
		for _, s := range h.sup.Snapshots() {
			n = append(n, s.Spec.Name)
		}
		return n
	}
	// A removed name comes back as new, after the old one is down.
	res, _ = h.sup.Apply([]config.Instance{a2, b})
	if !slices.Equal(res.Added, []string{"b"}) || !slices.Equal(names(), []string{"a", "b"}) {
		t.Errorf("%+v %v", res, names())
	}
	if _, err := h.sup.Control("c", OpStop); !errors.Is(err, ErrUnknownInstance) {
		t.Errorf("control of a removed instance: %v", err)
	}
}

func TestUpsertStartsWhatIsDown(t *testing.T) {
	h := newHarness(t)
	a := h.spec("a", 8001, "on-failure")
	h.startReady(a)
	_, _ = h.sup.Control("a", OpStop)
	h.expect("a", EvStopped)
	// Apply (reload) leaves an operator's stop alone; Upsert (run) starts it.
	h.sup.Apply([]config.Instance{a})
	if s := h.state("a"); s.State != Stopped {
		t.Errorf("%+v", s)
	}
	res, _ := h.sup.Upsert([]config.Instance{a})
	if !slices.Equal(res.Unchanged, []string{"a"}) {
		t.Errorf("%+v", res)
	}
	h.ready("a")
}

func TestStopAll(t *testing.T) {
	h := newHarness(t)
	h.starter.ignoreTerm = true
	pa := h.startReady(h.spec("a", 8001, "always"))
	h.startReady(h.spec("b", 8002, "always"))
	_, _ = h.sup.Control("b", OpStop)
	h.clock.expectTimer(t, 5*time.Second)
	h.clock.Advance(5 * time.Second)
	h.expect("b", EvStopped)
	done := make(chan struct{})
	go func() {
		h.sup.StopAll(2 * time.Second) // shorter than a's stop_timeout of 5s
		close(done)
	}()
	h.clock.expectTimer(t, 2*time.Second)
	h.clock.Advance(2 * time.Second)
	if k := h.expect("a", EvKilled); k.PID != pa.pid || k.Grace != 2*time.Second {
		t.Errorf("%+v", k)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("StopAll did not return")
	}
	if _, err := h.sup.Upsert([]config.Instance{h.spec("c", 8003, "always")}); !errors.Is(err, ErrShuttingDown) {
		t.Errorf("add after StopAll: %v", err)
	}
	if _, err := h.sup.Control("a", OpStart); !errors.Is(err, ErrShuttingDown) {
		t.Errorf("start after StopAll: %v", err)
	}
}

func TestEventLines(t *testing.T) {
	for _, c := range []struct {
		e    Event
		want string
	}{
		{Event{Instance: "a", Kind: EvStarted, PID: 5, URL: "http://h:1", LogFile: "/l"}, "a started: pid 5, http://h:1, log /l"},
		{Event{Instance: "a", Kind: EvReady, Took: 1234 * time.Millisecond, URL: "http://h:1"}, "a ready after 1.23s at http://h:1"},
		{Event{Instance: "a", Kind: EvRequested, Op: OpStop}, "a: stop requested"},
		{Event{Instance: "a", Kind: EvExited, Exit: "exit code 3", Ran: 1500 * time.Millisecond, Reason: ReasonCrash}, "a exited: exit code 3 after 1.5s"},
		{Event{Instance: "a", Kind: EvRestarting, Delay: 2 * time.Second}, "a restarting in 2.0s"},
		{Event{Instance: "a", Kind: EvStopped}, "a stopped"},
		{Event{Instance: "a", Kind: EvStopped, Exit: "exit code 0"}, "a stopped (exit code 0)"},
		{Event{Instance: "a", Kind: EvFailed, Exit: "exit code 2", Reason: ReasonCrash}, "a failed: exit code 2 (crash); not restarting"},
		{Event{Instance: "a", Kind: EvRemoved}, "a removed from supervision"},
	} {
		if got, _ := c.e.Line(); got != c.want {
			t.Errorf("%s: %q, want %q", c.e.Kind, got, c.want)
		}
	}
	if Stopping.String() != "stopping" || State(42).String() != "State(42)" || ReasonLoadTimeout.String() != "load timeout" ||
		Reason(42).String() != "Reason(42)" || RestartNever.String() != "never" {
		t.Error("names")
	}
	for in, want := range map[string]RestartPolicy{"": RestartOnFailure, "on-failure": RestartOnFailure, "always": RestartAlways, "never": RestartNever} {
		if got, err := ParsePolicy(in); got != want || err != nil {
			t.Errorf("ParsePolicy(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParsePolicy("sometimes"); err == nil {
		t.Error("an unknown restart policy parsed")
	}
}

// At shutdown a failed instance stays failed and is not said "stopped":
// nothing of it ran.
func TestShutdownLeavesFailedAlone(t *testing.T) {
	h := newHarness(t)
	h.ports[8002] = errors.New("port 8002 is taken")
	h.sup.Apply([]config.Instance{h.spec("a", 8001, "on-failure"), h.spec("b", 8002, "on-failure")})
	h.ready("a")
	h.expect("b", EvFailed)
	h.sup.StopAll(time.Second)
	h.expect("a", EvStopped)
	// Every owner has ended: close the stream and read it to its end, so
	// that a late event cannot slip past the check.
	h.sup.CloseEvents()
	for e := range h.events {
		h.pending = append(h.pending, e)
	}
	for _, e := range h.pending {
		if e.Instance == "b" {
			t.Errorf("event for the failed instance at shutdown: %+v", e)
		}
	}
	if s := h.state("b"); s.State != Failed || s.LastReason != ReasonPortTaken {
		t.Errorf("b after shutdown: %+v", s)
	}
}

// TestStartShortOfResourcesRetried: a start that failed for lack of
// descriptors (a flood of connections once left "pipe2: too many open
// files") is retried by the restart policy, not left failed once the
// shortage has passed; still failing, it ends as a crash loop would; under
// restart = "never" it fails at once.
func TestStartShortOfResourcesRetried(t *testing.T) {
	h := newHarness(t)
	h.starter.setErr(os.NewSyscallError("pipe2", syscall.EMFILE))
	h.sup.Apply([]config.Instance{h.spec("a", 8001, "on-failure")})
	r := h.expect("a", EvRestarting)
	if line, _ := r.Line(); line != "a could not start (start /x/llama-server: pipe2: too many open files); restarting in 1.0s" {
		t.Errorf("line %q", line)
	}
	h.starter.setErr(nil)
	h.clock.Advance(time.Second)
	h.ready("a")

	h.starter.setErr(os.NewSyscallError("pipe2", syscall.EMFILE))
	h.sup.Apply([]config.Instance{h.spec("b", 8002, "always")})
	for i := range testPolicy.CrashLoop - 1 {
		r := h.expect("b", EvRestarting)
		if want := testPolicy.BackoffMin << i; r.Delay != want {
			t.Errorf("retry %d after %s, want %s", i+1, r.Delay, want)
		}
		h.clock.Advance(r.Delay)
	}
	if f := h.expect("b", EvFailed); f.Reason != ReasonStartFailed || !errors.Is(f.Err, syscall.EMFILE) {
		t.Errorf("after %d failed starts: %+v", testPolicy.CrashLoop, f)
	}

	h.sup.Apply([]config.Instance{h.spec("a", 8001, "on-failure"), h.spec("b", 8002, "always"), h.spec("c", 8003, "never")})
	if f := h.expect("c", EvFailed); f.Reason != ReasonStartFailed {
		t.Errorf("restart never: %+v", f)
	}
}

// An on-demand instance is supervised from the start but runs only when
// asked (the router's start); a changed spec while it is down waits for
// that start instead of starting it.
func TestOnDemandStartsOnlyWhenAsked(t *testing.T) {
	h := newHarness(t)
	a := h.spec("a", 8001, "on-failure")
	a.Routing.OnDemand = true
	if _, err := h.sup.Apply([]config.Instance{a}); err != nil {
		t.Fatal(err)
	}
	if s := h.state("a"); s.State != Stopped || s.PID != 0 {
		t.Fatalf("on demand, before any request: %+v", s)
	}
	a2 := a
	a2.Cmd = append(slices.Clone(a.Cmd), "--ctx-size", "8192")
	res, _ := h.sup.Apply([]config.Instance{a2})
	if !slices.Equal(res.Changed, []string{"a"}) {
		t.Fatalf("%+v", res)
	}
	testutil.WaitFor(t, "the new spec", 5*time.Second, func() bool { return slices.Contains(h.state("a").Spec.Cmd, "8192") })
	if s := h.state("a"); s.State != Stopped || s.PID != 0 {
		t.Fatalf("changed while down: %+v", s)
	}
	h.sup.Control("a", OpStart)
	p := h.ready("a")
	if got := h.starter.specs[p.pid].Cmd; !slices.Contains(got, "8192") {
		t.Errorf("started with %q, not the new spec", got)
	}
	// Running, a changed spec restarts it as any other.
	a3 := a
	a3.Cmd = append(slices.Clone(a.Cmd), "--ctx-size", "4096")
	h.sup.Apply([]config.Instance{a3})
	p3 := h.ready("a")
	if got := h.starter.specs[p3.pid].Cmd; !slices.Contains(got, "4096") || p3.pid == p.pid {
		t.Errorf("restarted with %q (pid %d, was %d)", got, p3.pid, p.pid)
	}
}
