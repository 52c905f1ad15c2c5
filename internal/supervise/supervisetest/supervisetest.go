// Package supervisetest runs a supervise.Supervisor on fakes — processes
// the test ends at will (exiting 0 on SIGTERM, as an idle llama-server
// does), a clock it advances, readiness it reports — for the tests of the
// packages built on the supervisor (control, logstream). The supervisor's
// own tests have their own fakes, inside the package.
package supervisetest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

// ErrBoom is the fake starter's failure.
var ErrBoom = errors.New("boom")

// Clock fires timers only when the test advances it.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []timer
}

type timer struct {
	at time.Time
	ch chan time.Time
}

func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.timers = append(c.timers, timer{c.now.Add(d), ch})
	return ch
}

// Advance moves the clock and fires the timers due.
func (c *Clock) Advance(d time.Duration) {
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

// Proc is a fake process: it exits 0 on SIGTERM and dies of SIGKILL.
type Proc struct {
	pid    int
	exited chan syscall.WaitStatus
	out    *os.File

	mu    sync.Mutex
	ended bool
}

func (p *Proc) PID() int                          { return p.pid }
func (p *Proc) Exited() <-chan syscall.WaitStatus { return p.exited }

func (p *Proc) Signal(sig syscall.Signal) error {
	switch sig {
	case syscall.SIGKILL:
		p.end(syscall.WaitStatus(sig))
	case syscall.SIGTERM:
		p.Exit(0)
	}
	return nil
}

// Exit ends the process with an exit code, as if on its own.
func (p *Proc) Exit(code int) { p.end(syscall.WaitStatus(code << 8)) }

func (p *Proc) end(ws syscall.WaitStatus) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.ended {
		p.ended = true
		p.out.Close() // its end of the log pipe goes with it
		p.exited <- ws
	}
}

// Starter hands out Procs numbered from 1001; each writes "output of
// NAME" to its log as it starts.
type Starter struct {
	mu    sync.Mutex
	next  int
	err   error
	procs map[int]*Proc
}

func (s *Starter) Start(spec config.Instance, out *os.File) (supervise.Process, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	s.next++
	fd, err := syscall.Dup(int(out.Fd()))
	if err != nil {
		return nil, err
	}
	p := &Proc{pid: 1000 + s.next, exited: make(chan syscall.WaitStatus, 1), out: os.NewFile(uintptr(fd), "stdout")}
	if s.procs == nil {
		s.procs = map[int]*Proc{}
	}
	s.procs[p.pid] = p
	p.out.WriteString("output of " + spec.Name + "\n")
	return p, nil
}

// Proc returns the process of pid.
func (s *Starter) Proc(pid int) *Proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.procs[pid]
}

// SetErr makes every start fail with err from now on (nil: succeed).
func (s *Starter) SetErr(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

// Probe lets the test say when a process is ready.
type Probe struct {
	mu      sync.Mutex
	reports map[int]func(supervise.Probe)
}

func (f *Probe) probe(_ context.Context, _ config.Instance, pid int, report func(supervise.Probe)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.reports == nil {
		f.reports = map[int]func(supervise.Probe){}
	}
	f.reports[pid] = report
}

// Report says pid is ready, once its probe has begun.
func (f *Probe) Report(t testing.TB, pid int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		f.mu.Lock()
		r := f.reports[pid]
		f.mu.Unlock()
		if r != nil {
			r(supervise.ProbeReady)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no probe for pid %d", pid)
		}
		time.Sleep(time.Millisecond)
	}
}

// Harness is a supervisor on the fakes, with its event stream.
type Harness struct {
	T       testing.TB
	Sup     *supervise.Supervisor
	Clock   *Clock
	Starter *Starter
	Probe   *Probe
	LogDir  string

	events  <-chan supervise.Event
	pending []supervise.Event
}

// New returns a harness whose supervisor is stopped at the end of the test.
func New(t testing.TB) *Harness {
	logDir := t.TempDir() // removed after the StopAll below (cleanups run last first)
	h := &Harness{T: t, LogDir: logDir, Clock: &Clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		Starter: &Starter{}, Probe: &Probe{}}
	h.Sup = supervise.New(supervise.NewReaper(), supervise.Policy{BackoffMin: time.Second, BackoffMax: 8 * time.Second}, nil,
		supervise.Deps{Starter: h.Starter, Clock: h.Clock, Probe: h.Probe.probe,
			Liveness:  func(context.Context, config.Instance) supervise.LiveProbe { return supervise.LiveProbe{} },
			CheckPort: func(config.Instance) error { return nil }})
	ev, cancel := h.Sup.Subscribe()
	h.events = ev
	t.Cleanup(func() {
		cancel()
		done := make(chan struct{})
		go func() {
			h.Sup.StopAll(time.Second)
			close(done)
		}()
		for {
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
				h.Clock.Advance(time.Second)
			}
		}
	})
	return h
}

// Spec is an instance called name on port.
func (h *Harness) Spec(name string, port int, restart string) config.Instance {
	return config.Instance{Name: name, Executable: "/x/llama-server", Cmd: []string{"--port", "1"}, Port: port,
		URL: "http://127.0.0.1:1", LogFile: filepath.Join(h.LogDir, name+".log"), Restart: restart,
		ReadyTimeout: time.Minute, StopTimeout: 5 * time.Second, ReadyTimeoutS: 60, StopTimeoutS: 5}
}

// Expect returns name's next event of kind, skipping name's other events
// before it; other instances' events are kept for later.
func (h *Harness) Expect(name string, kind supervise.EventKind) supervise.Event {
	h.T.Helper()
	for {
		if e := h.Next(name); e.Kind == kind {
			return e
		}
	}
}

// Next returns name's next event.
func (h *Harness) Next(name string) supervise.Event {
	h.T.Helper()
	for i, e := range h.pending {
		if e.Instance == name {
			h.pending = append(h.pending[:i:i], h.pending[i+1:]...)
			return e
		}
	}
	deadline := time.After(30 * time.Second)
	for {
		select {
		case e := <-h.events:
			if e.Instance == name {
				return e
			}
			h.pending = append(h.pending, e)
		case <-deadline:
			h.T.Fatalf("no further event for %s", name)
		}
	}
}

// State is name's snapshot.
func (h *Harness) State(name string) supervise.Snapshot {
	h.T.Helper()
	for _, s := range h.Sup.Snapshots() {
		if s.Spec.Name == name {
			return s
		}
	}
	h.T.Fatalf("%s is not supervised", name)
	return supervise.Snapshot{}
}

// StartReady hands spec over (as run does) and brings it to ready.
func (h *Harness) StartReady(spec config.Instance) *Proc {
	h.T.Helper()
	if _, err := h.Sup.Upsert([]config.Instance{spec}); err != nil {
		h.T.Fatal(err)
	}
	return h.Ready(spec.Name)
}

// Ready waits for name's next start and reports it ready.
func (h *Harness) Ready(name string) *Proc {
	h.T.Helper()
	ev := h.Expect(name, supervise.EvStarted)
	h.Probe.Report(h.T, ev.PID)
	if r := h.Expect(name, supervise.EvReady); r.PID != ev.PID {
		h.T.Fatalf("ready event %+v after start %+v", r, ev)
	}
	return h.Starter.Proc(ev.PID)
}
