package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Want-up is the operator's word: a reload changes specs, never whether an
// instance is wanted up. Both were broken before (issue 18): a stop that
// met a reload's restart never answered and the instance came back up;
// a stopped instance was started again by a reload that changed it.

// TestStopDuringReloadRestartIsKept: stop x while a reload restarts it,
// then reload again: the stop answers "stopped" and x stays down.
func TestStopDuringReloadRestartIsKept(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	cfg := filepath.Join(dir, "cfg.toml")
	port := freePorts(t, 1)[0]
	// It ignores SIGTERM: each stop lasts its 3 s stop_timeout, long
	// enough for the second reload to come while it is stopping.
	x := server{name: "x", port: port, control: `stop_timeout = "3s"` + "\ndrain_timeout = \"0s\""}
	writeServers(t, cfg, filepath.Join(dir, "logs"), x)
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=50", "STANDIN_IGNORE_TERM=1"})
	first := e.waitReady(t, "x")["x"].PID

	x.server = "ctx_size = 1024"
	writeServers(t, cfg, filepath.Join(dir, "logs"), x)
	if r := control(t, app, "reload", "--no-wait"); r.code != 0 {
		t.Fatalf("reload 1: %s", r)
	}
	// The reload's restart is under way (the old process ignores SIGTERM
	// for 3 s); the operator stops x meanwhile.
	stopped := make(chan result, 1)
	go func() { stopped <- control(t, app, "stop", "x") }()
	waitFor(t, "the stop to be requested", 10*time.Second, func() bool { return strings.Contains(e.out.String(), "x: stop requested") })
	x.server = "ctx_size = 2048"
	writeServers(t, cfg, filepath.Join(dir, "logs"), x)
	r2 := control(t, app, "reload")
	if r2.code != 0 || !strings.Contains(r2.stdout, "~ x: kept down (stopped by the operator)") {
		t.Errorf("reload 2 during the stop: %s", r2)
	}
	select {
	case r := <-stopped:
		if r.code != 0 || !strings.Contains(r.stdout, "x: stopped") {
			t.Errorf("stop: %s", r)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the stop never answered\n%s", e.out.String())
	}
	time.Sleep(500 * time.Millisecond)
	in := byName(e.status(t))["x"]
	if in.State != "stopped" || in.PID != 0 || processAlive(first) {
		t.Errorf("after stop and two reloads: %+v (first pid alive: %v)", in, processAlive(first))
	}
	// start brings it back with the last reload's settings.
	if r := control(t, app, "start", "x"); r.code != 0 {
		t.Fatalf("start: %s", r)
	}
	now := e.waitReady(t, "x")["x"].PID
	if argv := readFile(t, fmt.Sprintf("/proc/%d/cmdline", now)); !strings.Contains(argv, "--ctx-size\x002048") {
		t.Errorf("started with %q, not the last reload's settings", argv)
	}
	// Stopped as a container is, so the instance (which ignores SIGTERM)
	// is killed by entry, not left behind by the test.
	stopEntry(t, e)
}

// TestReloadKeepsStoppedInstanceDown: after stop x, a reload that changes
// x records its new settings and leaves it down; the report says so.
func TestReloadKeepsStoppedInstanceDown(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	cfg := filepath.Join(dir, "cfg.toml")
	ports := freePorts(t, 2)
	x, y := server{name: "x", port: ports[0]}, server{name: "y", port: ports[1]}
	writeServers(t, cfg, filepath.Join(dir, "logs"), x, y)
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=50"})
	ypid := e.waitReady(t, "x", "y")["y"].PID
	if r := control(t, app, "stop", "x"); r.code != 0 {
		t.Fatalf("stop: %s", r)
	}
	x.server, y.server = "ctx_size = 1024", "ctx_size = 1024"
	writeServers(t, cfg, filepath.Join(dir, "logs"), x, y)
	r := control(t, app, "reload")
	if r.code != 0 || !strings.Contains(r.stdout, "~ x: kept down (stopped by the operator)") || !strings.Contains(r.stdout, "~ y: restarted") {
		t.Errorf("reload: %s", r)
	}
	if !strings.Contains(r.stdout, "x: kept down") {
		t.Errorf("reload (waiting) does not say x stays down: %s", r)
	}
	st := e.waitReady(t, "y")
	if st["x"].State != "stopped" || st["y"].PID == ypid {
		t.Errorf("after the reload: x %+v, y %+v", st["x"], st["y"])
	}
	time.Sleep(500 * time.Millisecond)
	if in := byName(e.status(t))["x"]; in.State != "stopped" {
		t.Errorf("x came back up: %+v", in)
	}
	stopEntry(t, e)
}
