package supervise

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/printer"
)

// A reload that removes one instance and adds another on its port stops
// the removed one before starting the new one.
func TestReloadStopsRemovedFirst(t *testing.T) {
	h := newHarness(t)
	a, b := h.spec("a", 8001, "on-failure"), h.spec("b", 8002, "on-failure")
	h.startReady(a)
	h.startReady(b)
	// b ignores SIGTERM: c must still wait until b is really gone.
	h.starter.mu.Lock()
	for _, p := range h.starter.procs {
		p.ignoreTerm = true
	}
	h.starter.mu.Unlock()
	events, cancel := h.sup.Subscribe()
	defer cancel()
	c := h.spec("c", 8002, "on-failure")
	if _, err := h.sup.Apply([]config.Instance{a, b}); err != nil { // config-owned
		t.Fatal(err)
	}
	done := make(chan ApplyResult)
	go func() {
		res, err := h.sup.Reload([]config.Instance{a, c})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	// b holds on until its SIGKILL deadline; c may start only after.
	h.clock.expectTimer(t, b.StopTimeout)
	h.clock.Advance(b.StopTimeout)
	res := <-done
	if !slices.Equal(res.Added, []string{"c"}) || !slices.Equal(res.Removed, []string{"b"}) || !slices.Equal(res.Unchanged, []string{"a"}) {
		t.Errorf("result %+v", res)
	}
	var order []string
	for len(order) < 2 {
		e := <-events
		if (e.Instance == "b" && e.Kind == EvRemoved) || (e.Instance == "c" && e.Kind == EvStarted) {
			order = append(order, e.Instance+" "+e.Kind.String())
		}
	}
	if !slices.Equal(order, []string{"b removed", "c started"}) {
		t.Errorf("order %v", order)
	}
}

// Instances handed over by `run` are not the config's: a reload leaves
// them alone unless the config names them.
func TestApplyLeavesHandedOverAlone(t *testing.T) {
	h := newHarness(t)
	a, x := h.spec("a", 8001, "on-failure"), h.spec("x", 8009, "on-failure")
	h.sup.Apply([]config.Instance{a})
	h.startReady(x) // Upsert, as run hands it over
	if d := h.sup.Diff([]config.Instance{a}); len(d.Removed) != 0 || !slices.Equal(d.Unchanged, []string{"a"}) {
		t.Errorf("diff %+v", d)
	}
	if res, _ := h.sup.Apply([]config.Instance{a}); len(res.Removed) != 0 {
		t.Errorf("removed a handed-over instance: %+v", res)
	}
	// Once the config names it, it is the config's.
	h.sup.Apply([]config.Instance{a, x})
	if res, _ := h.sup.Apply([]config.Instance{a}); !slices.Equal(res.Removed, []string{"x"}) {
		t.Errorf("config-owned x not removed: %+v", res)
	}
	h.expect("x", EvRemoved)
}

func TestReloaderRefusesBadConfig(t *testing.T) {
	h := newHarness(t)
	a := h.spec("a", 8001, "on-failure")
	h.startReady(a)
	h.sup.Apply([]config.Instance{a})
	_, err := config.Parse("cfg.toml", []byte("[instance.a.server]\nport = 0\nflash_attn = true\n"), config.Options{AppDir: t.TempDir()})
	r := &Reloader{Sup: h.sup, P: printer.Discard(), Load: func() (string, []config.Instance, []string, error) {
		return "cfg.toml", nil, nil, err
	}}
	_, rerr := r.Run(false, "test")
	if rerr == nil || !strings.Contains(rerr.Error(), "cfg.toml: 2 problem(s); nothing changed") || !strings.Contains(rerr.Error(), "cfg.toml:2: instance.a.server.port") {
		t.Fatalf("error: %v", rerr)
	}
	var bad interface{ BadInput() bool }
	if !errors.As(rerr, &bad) || !bad.BadInput() {
		t.Error("a refused config is not bad input")
	}
	if s := h.state("a"); s.State != Ready {
		t.Errorf("a refused reload touched a: %+v", s)
	}
}

func TestSpecChanges(t *testing.T) {
	zero, one := "0", "1"
	a := config.Instance{Executable: "/s", Cmd: []string{"--port", "1"}, GPUIDs: &zero, Env: map[string]string{"CUDA_VISIBLE_DEVICES": "0"}, LogFile: "/l", LogMaxSize: 100 << 20}
	b := a
	b.GPUIDs, b.Env, b.LogMaxSize = &one, map[string]string{"CUDA_VISIBLE_DEVICES": "1"}, 1<<20
	if got := SpecChanges(a, b); !slices.Equal(got, []string{"gpu_ids 0 → 1", "log_max_size 100MiB → 1MiB"}) {
		t.Errorf("%q", got)
	}
	c := a
	c.Cmd, c.LogFile = []string{"--port", "2"}, "/m"
	if got := SpecChanges(a, c); !slices.Equal(got, []string{"port 1 → 2", "log_file /l → /m"}) {
		t.Errorf("%q", got)
	}
}

// A reload's report says per instance what it did (or, dry, would do),
// in the config's words; the operator's stop holds through it; a dry run
// changes nothing; held-back instances (After) are counted.
func TestReloaderReport(t *testing.T) {
	h := newHarness(t)
	a, b, x := h.spec("a", 8001, "on-failure"), h.spec("b", 8002, "on-failure"), h.spec("x", 8009, "on-failure")
	if _, err := h.sup.Apply([]config.Instance{a, b, x}); err != nil {
		t.Fatal(err)
	}
	pa := h.ready("a")
	h.ready("b")
	h.ready("x")
	h.control("b", OpStop)
	h.expect("b", EvStopped)
	a2, b2, c := a, b, h.spec("c", 8003, "on-failure")
	a2.Cmd = []string{"--port", "2"}
	b2.Restart = "always"
	var out, errb strings.Builder
	var applied []bool
	r := &Reloader{Sup: h.sup, P: printer.New(&out, &errb, "", false),
		Load: func() (string, []config.Instance, []string, error) {
			return "cfg.toml", []config.Instance{a2, b2, c}, []string{"a warning"}, nil
		},
		After: func(apply bool) []string {
			applied = append(applied, apply)
			return []string{"… m: waiting for its model"}
		}}

	dry, err := r.Run(true, "test")
	if err != nil {
		t.Fatal(err)
	}
	wantDry := []string{"+ c: would start (http://127.0.0.1:1)", "~ a: would restart: port 1 → 2",
		"~ b: would keep down (stopped by the operator), new settings at its next start: restart on-failure → always",
		"- x: would stop and remove", "… m: waiting for its model"}
	if !slices.Equal(dry.Lines(), wantDry) {
		t.Errorf("dry run:\n%s\nwant\n%s", strings.Join(dry.Lines(), "\n"), strings.Join(wantDry, "\n"))
	}
	if s := h.state("a"); s.PID != pa.pid || s.State != Ready || out.Len() != 0 {
		t.Errorf("a dry run changed a (%+v) or said something (%q)", s, out.String())
	}

	rep, err := r.Run(false, "test")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"+ c: started (http://127.0.0.1:1)", "~ a: restarted: port 1 → 2",
		"~ b: kept down (stopped by the operator), new settings at its next start: restart on-failure → always",
		"- x: stopped and removed", "… m: waiting for its model"}
	if !slices.Equal(rep.Lines(), want) {
		t.Errorf("reload:\n%s\nwant\n%s", strings.Join(rep.Lines(), "\n"), strings.Join(want, "\n"))
	}
	if !slices.Equal(applied, []bool{false, true}) {
		t.Errorf("After(apply) calls %v, want the dry run's false, then true", applied)
	}
	if !strings.Contains(out.String(), "reload (test) of cfg.toml: 1 added, 2 changed, 1 removed, 0 unchanged, 1 waiting for their models") ||
		!strings.Contains(errb.String()+out.String(), "a warning") {
		t.Errorf("said %q / %q", out.String(), errb.String())
	}
	h.expect("x", EvRemoved)
	h.ready("c")
	if q := h.ready("a"); q.pid == pa.pid {
		t.Error("a was not restarted")
	}
	if s := h.state("b"); s.State != Stopped || s.WantUp || s.Spec.Restart != "always" {
		t.Errorf("b after the reload: %+v, want stopped with its new spec", s)
	}

	// Unchanged: said with the pid that runs.
	again, _ := r.Run(true, "test")
	if l := again.Lines(); len(l) < 1 || !strings.HasPrefix(l[0], "= a: unchanged (pid ") {
		t.Errorf("unchanged: %q", l)
	}
}

// An on-demand instance is not started by Apply (the router starts it on
// its first request); one added later by AddConfigured (held back for its
// model) is the config's: a reload without it removes it.
func TestOnDemandAndAddConfigured(t *testing.T) {
	h := newHarness(t)
	od := h.spec("od", 8001, "on-failure")
	od.Routing.OnDemand = true
	res, err := h.sup.Apply([]config.Instance{od})
	if err != nil {
		t.Fatal(err)
	}
	if d := res.Decisions["od"]; d.Will != OutcomeDone || !strings.Contains(d.Note, "on demand") {
		t.Errorf("on-demand decision %+v", d)
	}
	if s := h.state("od"); s.State != Stopped || s.WantUp || s.PID != 0 {
		t.Errorf("on demand, before any request: %+v", s)
	}
	if d := h.control("od", OpStart); d.Will != OutcomeUp {
		t.Errorf("its first request's start: %+v", d)
	}
	h.ready("od")

	late := h.spec("late", 8002, "on-failure")
	res, err = h.sup.AddConfigured([]config.Instance{late})
	if err != nil || !slices.Equal(res.Added, []string{"late"}) {
		t.Fatalf("AddConfigured: %+v, %v", res, err)
	}
	h.ready("late")
	if res, _ := h.sup.Apply([]config.Instance{od}); !slices.Equal(res.Removed, []string{"late"}) {
		t.Errorf("a reload without the held-back instance kept it: %+v", res)
	}
	h.expect("late", EvRemoved)
	if _, err := h.sup.Control("late", OpStart); !errors.Is(err, ErrUnknownInstance) {
		t.Errorf("start of a removed instance: %v", err)
	}
}

// A reload that swaps two instances' ports, or turns three round, starts
// each on its new port only once the instance that listened there is down:
// none fails with its port taken, whichever old process is slow to go.
func TestReloadPortCycle(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d instances", n), func(t *testing.T) {
			h := newHarness(t)
			h.portsLive = true
			var specs []config.Instance
			for i := range n {
				specs = append(specs, h.spec(string(rune('a'+i)), 8001+i, "on-failure"))
			}
			if _, err := h.sup.Apply(specs); err != nil {
				t.Fatal(err)
			}
			procs := map[string]*fakeProc{}
			for _, in := range specs {
				procs[in.Name] = h.ready(in.Name)
			}
			for round := range 10 {
				ports := make([]int, n)
				for i := range specs {
					ports[i] = specs[(i+1)%n].Port
				}
				for i := range specs {
					specs[i].Port = ports[i]
				}
				// One old process holds on to its port until SIGKILL; the
				// others go at SIGTERM and their instances start at once.
				slow := specs[round%n].Name
				procs[slow].ignoreTerm = true
				res, err := h.sup.Reload(specs)
				if err != nil || len(res.Changed) != n {
					t.Fatalf("round %d: %+v, %v", round, res, err)
				}
				for _, in := range specs {
					if in.Name != slow {
						h.expect(in.Name, EvExited) // then it starts on its new port
					}
				}
				h.clock.Advance(specs[0].StopTimeout)
				for _, in := range specs {
					for {
						e := h.next(in.Name)
						if e.Kind == EvFailed {
							t.Fatalf("round %d: %s failed: %v", round, in.Name, e.Err)
						}
						if e.Kind == EvStarted {
							h.starter.mu.Lock()
							got := h.starter.specs[e.PID].Port
							h.starter.mu.Unlock()
							if got != in.Port {
								t.Fatalf("round %d: %s started on %d, want %d", round, in.Name, got, in.Port)
							}
							h.probe.report(t, e.PID, ProbeReady)
							h.expect(in.Name, EvReady)
							procs[in.Name] = h.starter.proc(e.PID)
							break
						}
					}
				}
			}
		})
	}
}
