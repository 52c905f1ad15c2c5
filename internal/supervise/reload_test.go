package supervise

import (
	"errors"
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
