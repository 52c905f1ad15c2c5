package supervise

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
)

// The fakes stand in for processes, time and probes, so every transition
// can be driven step by step without sleeping.

// fakeClock fires timers only when the test advances it, and tells the
// test each timer it arms (so the test never advances too early).
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []fakeTimer
	armed  chan time.Duration
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), armed: make(chan time.Duration, 1000)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.timers = append(c.timers, fakeTimer{c.now.Add(d), ch})
	c.armed <- d
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	keep := c.timers[:0]
	for _, t := range c.timers {
		if !t.at.After(c.now) {
			t.ch <- c.now
		} else {
			keep = append(keep, t)
		}
	}
	c.timers = keep
}

// expectTimer waits until a timer of d is armed.
func (c *fakeClock) expectTimer(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case got := <-c.armed:
			if got == d {
				return
			}
		case <-deadline:
			t.Fatalf("no %s timer was armed", d)
		}
	}
}

// fakeProc is a process the test ends at will. By default it exits 0 on
// SIGTERM, as an idle llama-server does, and always dies of SIGKILL.
type fakeProc struct {
	pid        int
	exited     chan syscall.WaitStatus
	ignoreTerm bool
	holdPipe   bool     // its stdout outlives it, as if a grandchild held it: the test closes out
	out        *os.File // its stdout (the log pipe)

	mu      sync.Mutex
	signals []syscall.Signal
	ended   bool
}

func (p *fakeProc) PID() int                          { return p.pid }
func (p *fakeProc) Exited() <-chan syscall.WaitStatus { return p.exited }

func (p *fakeProc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	p.signals = append(p.signals, sig)
	p.mu.Unlock()
	switch {
	case sig == syscall.SIGKILL:
		p.end(syscall.WaitStatus(sig))
	case sig == syscall.SIGTERM && !p.ignoreTerm:
		p.exit(0)
	}
	return nil
}

// exit ends the process with an exit code, as if on its own.
func (p *fakeProc) exit(code int) { p.end(syscall.WaitStatus(code << 8)) }

func (p *fakeProc) end(ws syscall.WaitStatus) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.ended {
		p.ended = true
		if !p.holdPipe {
			p.out.Close() // its end of the log pipe goes with it
		}
		p.exited <- ws
	}
}

func (p *fakeProc) got() []syscall.Signal {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]syscall.Signal(nil), p.signals...)
}

// fakeStarter hands out fakeProcs and records which spec each ran.
type fakeStarter struct {
	mu         sync.Mutex
	next       int
	err        error
	ignoreTerm bool
	holdPipe   bool          // its processes' stdout outlives them (fakeProc.holdPipe)
	gate       chan struct{} // when set, Start waits until it is closed (release): a slow exec
	released   sync.Once
	procs      map[int]*fakeProc
	specs      map[int]config.Instance
}

func (s *fakeStarter) Start(spec config.Instance, out *os.File) (Process, error) {
	s.mu.Lock()
	gate := s.gate
	s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	s.next++
	p := &fakeProc{pid: 1000 + s.next, exited: make(chan syscall.WaitStatus, 1), ignoreTerm: s.ignoreTerm, holdPipe: s.holdPipe}
	if s.procs == nil {
		s.procs, s.specs = map[int]*fakeProc{}, map[int]config.Instance{}
	}
	s.procs[p.pid], s.specs[p.pid] = p, spec
	out.WriteString("output of " + spec.Name + "\n")
	// Its own copy of stdout, as a real child has, for say.
	fd, err := syscall.Dup(int(out.Fd()))
	if err != nil {
		return nil, err
	}
	p.out = os.NewFile(uintptr(fd), "stdout")
	return p, nil
}

// holder says which live process listens on port, if one does.
func (s *fakeStarter) holder(port int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for pid, p := range s.procs {
		p.mu.Lock()
		ended := p.ended
		p.mu.Unlock()
		if !ended && s.specs[pid].Port == port {
			return fmt.Errorf("port %d is already in use by pid %d (%s)", port, pid, s.specs[pid].Name)
		}
	}
	return nil
}

// release lets the starts waiting at the gate through.
func (s *fakeStarter) release() { s.released.Do(func() { close(s.gate) }) }

func (s *fakeStarter) proc(pid int) *fakeProc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.procs[pid]
}

func (s *fakeStarter) setErr(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

// fakeProbe lets the test report probe results for a pid.
type fakeProbe struct {
	mu      sync.Mutex
	reports map[int]func(Probe)
}

func (f *fakeProbe) probe(ctx context.Context, spec config.Instance, pid int, report func(Probe)) {
	f.mu.Lock()
	if f.reports == nil {
		f.reports = map[int]func(Probe){}
	}
	f.reports[pid] = report
	f.mu.Unlock()
}

func (f *fakeProbe) report(t *testing.T, pid int, pr Probe) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		r := f.reports[pid]
		f.mu.Unlock()
		if r != nil {
			r(pr)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no probe for pid %d", pid)
		}
		time.Sleep(time.Millisecond)
	}
}

// harness is a supervisor on fakes, with its event stream.
type harness struct {
	t        *testing.T
	logDir   string
	sup      *Supervisor
	clock    *fakeClock
	starter  *fakeStarter
	probe    *fakeProbe
	live     *fakeLive
	events   <-chan Event
	pending  []Event // read, not yet asked for
	ports    map[int]error
	portGate chan struct{} // when set, the port check waits until it is closed: a slow /proc
	portsMu  sync.Mutex
	// portsLive: a port is taken while a fake process of a spec on it
	// has not ended (instead of ports).
	portsLive bool
}

var testPolicy = Policy{BackoffMin: time.Second, BackoffMax: 8 * time.Second, QuickCrash: 10 * time.Second, CrashLoop: 5}

func newHarness(t *testing.T) *harness {
	// Made before the StopAll cleanup below is registered, so it is removed
	// after it (cleanups run last first): no sink writes into it as it goes.
	logDir := t.TempDir()
	h := &harness{t: t, logDir: logDir, clock: newFakeClock(), starter: &fakeStarter{}, probe: &fakeProbe{}, live: &fakeLive{}, ports: map[int]error{}}
	h.sup = New(NewReaper(), testPolicy, nil, Deps{Starter: h.starter, Clock: h.clock, Probe: h.probe.probe,
		Liveness: h.live.probe, Slots: h.live.slots, Usage: h.live.usage,
		CheckPort: func(in config.Instance) error {
			h.portsMu.Lock()
			gate := h.portGate
			h.portsMu.Unlock()
			if gate != nil {
				<-gate
			}
			h.portsMu.Lock()
			live := h.portsLive
			h.portsMu.Unlock()
			if live {
				return h.starter.holder(in.Port)
			}
			h.portsMu.Lock()
			defer h.portsMu.Unlock()
			return h.ports[in.Port]
		}})
	ev, cancel := h.sup.Subscribe()
	h.events = ev
	t.Cleanup(func() {
		cancel()
		// Fakes that ignore SIGTERM need the clock to reach their SIGKILL.
		done := make(chan struct{})
		go func() {
			h.sup.StopAll(time.Second)
			close(done)
		}()
		for {
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
				h.clock.Advance(time.Second)
			}
		}
	})
	return h
}

func (h *harness) spec(name string, port int, restart string) config.Instance {
	return config.Instance{Name: name, Executable: "/x/llama-server", Cmd: []string{"--port", "1"}, Port: port,
		URL: "http://127.0.0.1:1", LogFile: filepath.Join(h.logDir, name+".log"), Restart: restart,
		ReadyTimeout: time.Minute, StopTimeout: 5 * time.Second, ReadyTimeoutS: 60, StopTimeoutS: 5}
}

// expect returns name's next event of kind, skipping name's other
// events before it; other instances' events are kept for later.
func (h *harness) expect(name string, kind EventKind) Event {
	h.t.Helper()
	for {
		if e := h.next(name); e.Kind == kind {
			return e
		}
	}
}

// next returns name's next event.
func (h *harness) next(name string) Event {
	h.t.Helper()
	for i, e := range h.pending {
		if e.Instance == name {
			h.pending = append(h.pending[:i:i], h.pending[i+1:]...)
			return e
		}
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case e := <-h.events:
			if e.Instance == name {
				return e
			}
			h.pending = append(h.pending, e)
		case <-deadline:
			h.t.Fatalf("no further event for %s", name)
		}
	}
}

func (h *harness) state(name string) Snapshot {
	for _, s := range h.sup.Snapshots() {
		if s.Spec.Name == name {
			return s
		}
	}
	h.t.Fatalf("%s is not supervised", name)
	return Snapshot{}
}

// startReady applies spec and brings it to ready; it returns the process.
func (h *harness) startReady(spec config.Instance) *fakeProc {
	h.t.Helper()
	if _, err := h.sup.Upsert([]config.Instance{spec}); err != nil {
		h.t.Fatal(err)
	}
	return h.ready(spec.Name)
}

// ready waits for name's next start and reports it ready.
func (h *harness) ready(name string) *fakeProc {
	h.t.Helper()
	ev := h.expect(name, EvStarted)
	h.probe.report(h.t, ev.PID, ProbeReady)
	r := h.expect(name, EvReady)
	if r.PID != ev.PID || r.State != Ready {
		h.t.Fatalf("ready event %+v after start %+v", r, ev)
	}
	return h.starter.proc(ev.PID)
}

var errBoom = errors.New("boom")
