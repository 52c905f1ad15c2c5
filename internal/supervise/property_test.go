package supervise

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
)

// TestRandomInterleavings drives one instance through random sequences of
// operator requests, reloads, crashes, readiness and time, on fake
// processes and a fake clock, and checks after every step and at the end:
// every request is answered at once (the owner decides; nothing waits on
// a process); at most one process of the instance is alive; once things
// settle, the state is what the last operator request asked for (a reload
// never changes it); after shutdown no process is left.
func TestRandomInterleavings(t *testing.T) {
	seeds := 300
	if testing.Short() {
		seeds = 50
	}
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { interleave(t, uint64(seed)) })
	}
}

func interleave(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0xc0ffee))
	h := newHarness(t)
	go func() { // nobody here waits on armed timers one by one
		for range h.clock.armed {
		}
	}()
	h.starter.ignoreTerm = r.IntN(3) == 0
	policies := []string{"on-failure", "always", "never"}
	spec := h.spec("a", 8001, policies[r.IntN(3)])
	if r.IntN(2) == 0 {
		spec.DrainTimeout = 2 * time.Second
	}
	if _, err := h.sup.Apply([]config.Instance{spec}); err != nil {
		t.Fatal(err)
	}
	last := OpStart // what Apply of a new instance asks
	var log []string
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d: %s\nsteps: %v", seed, fmt.Sprintf(format, args...), log)
	}
	ask := func(op Op) {
		done := make(chan error, 1)
		go func() { _, err := h.sup.Control("a", op); done <- err }()
		select {
		case err := <-done:
			if err != nil {
				fail("%s: %v", op, err)
			}
		case <-time.After(5 * time.Second):
			fail("%s was not answered", op)
		}
		last = op
	}
	current := func() *fakeProc {
		if pid := h.state("a").PID; pid != 0 {
			return h.starter.proc(pid)
		}
		return nil
	}
	for step := range 25 {
		switch k := r.IntN(8); k {
		case 0, 1:
			op := []Op{OpStart, OpStop, OpRestart}[r.IntN(3)]
			log = append(log, op.String())
			ask(op)
		case 2:
			log = append(log, "reload")
			spec.Cmd = []string{"--port", "1", "--step", fmt.Sprint(step)}
			if _, err := h.sup.Apply([]config.Instance{spec}); err != nil {
				fail("reload: %v", err)
			}
		case 3:
			if p := current(); p != nil {
				log = append(log, "crash")
				p.exit(1)
			}
		case 4, 5:
			if s := h.state("a"); s.State == Starting && s.PID != 0 { // 0: still on its way
				log = append(log, "ready")
				h.probe.report(t, s.PID, ProbeReady)
			}
		default:
			d := []time.Duration{100 * time.Millisecond, time.Second, 5 * time.Second, 30 * time.Second}[r.IntN(4)]
			log = append(log, "+"+d.String())
			h.clock.Advance(d)
		}
		time.Sleep(time.Millisecond) // let the owner take what the step sent it
		if n := h.starter.aliveOf("a"); n > 1 {
			fail("%d processes alive at once", n)
		}
		// Only the operator's requests change whether it is wanted up:
		// not a reload, a crash or time.
		if s := h.state("a"); s.WantUp != (last != OpStop) {
			fail("wanted up %v after the last request %s (state %s)", s.WantUp, last, s.State)
		}
	}
	final := []Op{OpStart, OpStop, OpRestart}[r.IntN(3)]
	log = append(log, "final "+final.String())
	ask(final)
	settled := false
	for range 200 {
		s := h.state("a")
		wantUp := last != OpStop
		if s.WantUp != wantUp {
			fail("wanted up %v after %s", s.WantUp, last)
		}
		if wantUp && s.State == Ready || !wantUp && s.State == Stopped {
			settled = true
			break
		}
		switch {
		case s.State == Starting && s.PID == 0: // the starter has not answered yet
			h.waitUntil("the start", func() bool { return h.state("a").PID != 0 || h.state("a").State != Starting })
		case s.State == Starting:
			h.probe.report(t, s.PID, ProbeReady)
		case s.State == Failed:
			fail("failed after a final %s: %+v", last, s)
		default:
			h.clock.Advance(10 * time.Second) // drains, kill deadlines, backoffs
		}
		time.Sleep(time.Millisecond)
		if n := h.starter.aliveOf("a"); n > 1 {
			fail("%d processes alive at once", n)
		}
	}
	if !settled {
		fail("never settled: %+v", h.state("a"))
	}
	stopped := make(chan struct{})
	go func() { h.sup.StopAll(time.Second); close(stopped) }()
	for {
		select {
		case <-stopped:
			if n := h.starter.aliveOf("a"); n != 0 {
				fail("%d processes left after shutdown", n)
			}
			return
		case <-time.After(10 * time.Millisecond):
			h.clock.Advance(time.Second)
		}
	}
}

// aliveOf counts name's processes that have not ended.
func (s *fakeStarter) aliveOf(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for pid, p := range s.procs {
		p.mu.Lock()
		if !p.ended && s.specs[pid].Name == name {
			n++
		}
		p.mu.Unlock()
	}
	return n
}

// TestApplyRacesControl runs Apply (adding and removing names), Upsert and
// Control at once, as a reload, a hand-over from run and operators'
// commands can: under -race (make test runs this package with it) a field
// read outside the owner's goroutine or the supervisor's lock is
// reported; without it, every call still returns.
func TestApplyRacesControl(t *testing.T) {
	h := newHarness(t)
	go func() {
		for range h.clock.armed {
		}
	}()
	specs := []config.Instance{h.spec("a", 8001, "on-failure"), h.spec("b", 8002, "always"), h.spec("c", 8003, "never")}
	done := make(chan struct{})
	var wg sync.WaitGroup
	run := func(f func(i int)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				f(i)
			}
		}()
	}
	run(func(i int) {
		set := specs[:1+i%3]
		if i%2 == 1 {
			set = specs[i%3:]
		}
		_, _ = h.sup.Apply(set)
	})
	run(func(i int) {
		s := specs[i%3]
		s.Cmd = []string{"--port", "1", "--n", fmt.Sprint(i % 4)}
		_, _ = h.sup.Upsert([]config.Instance{s})
	})
	for _, op := range []Op{OpStop, OpStart, OpRestart} {
		run(func(i int) { _, _ = h.sup.Control(specs[i%3].Name, op) })
	}
	run(func(i int) {
		_ = h.sup.Snapshots()
		_, _ = h.sup.Spec(specs[i%3].Name)
		_ = h.sup.Diff(specs[:1+i%3])
	})
	time.Sleep(time.Second)
	close(done)
	wg.Wait()
	// One owner per name: a name added by two callers at once once had
	// two owners (two processes), one of them lost to the supervisor.
	h.sup.mu.Lock()
	defer h.sup.mu.Unlock()
	seen := map[string]bool{}
	for _, n := range h.sup.order {
		if seen[n] || h.sup.owners[n] == nil {
			t.Errorf("order %v does not match owners %v", h.sup.order, h.sup.owners)
		}
		seen[n] = true
	}
	if len(seen) != len(h.sup.owners) {
		t.Errorf("order %v, %d owners", h.sup.order, len(h.sup.owners))
	}
}
