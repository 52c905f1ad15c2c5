package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	ctl "github.com/llamaboot/llamaboot/internal/control"
	"github.com/llamaboot/llamaboot/internal/launch"
)

// server is one instance of a reload test's config.
type server struct {
	name    string
	port    int
	control string // extra control lines
	server  string // extra server lines
}

func writeServers(t *testing.T, path, logDir string, servers ...server) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "[master]\nllama_cpp_path = %q\n[instance.control]\nlog_dir = %q\n[instance.server]\nhost = \"127.0.0.1\"\n", standin, logDir)
	for _, s := range servers {
		fmt.Fprintf(&b, "[instance.%s.control]\n%s\n[instance.%s.server]\nport = %d\n%s\n", s.name, s.control, s.name, s.port, s.server)
	}
	writeFile(t, path, b.String())
}

// byName is the status of each supervised instance.
func byName(st ctl.Status) map[string]ctl.InstanceStatus {
	m := map[string]ctl.InstanceStatus{}
	for _, in := range st.Instances {
		m[in.Name] = in
	}
	return m
}

// waitReady waits until every named instance is ready and returns the
// status then.
func (e *entryProc) waitReady(t *testing.T, names ...string) map[string]ctl.InstanceStatus {
	t.Helper()
	var m map[string]ctl.InstanceStatus
	waitFor(t, fmt.Sprintf("%v ready", names), 30*time.Second, func() bool {
		m = byName(e.status(t))
		for _, n := range names {
			if m[n].State != "ready" {
				return false
			}
		}
		return true
	})
	return m
}

// TestReloadMatrix changes a running config in every way a reload must
// handle, through the built binary: add (on the port of a removed one),
// remove, change args, change gpu_ids, leave one alone (same pid), an
// invalid file (old plan kept, every problem with file:line), a dry run,
// and the SIGHUP path (also still forwarded to the command).
func TestReloadMatrix(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	cfg, logs := filepath.Join(dir, "cfg.toml"), filepath.Join(dir, "logs")
	p := freePorts(t, 4)
	writeServers(t, cfg, logs,
		server{name: "args", port: p[0], server: "ctx_size = 1024"},
		server{name: "gpu", port: p[1], control: `gpu_ids = "0"`},
		server{name: "gone", port: p[2]},
		server{name: "same", port: p[3]})
	mark := filepath.Join(dir, "hup")
	script := fmt.Sprintf(`trap "echo HUP >> %s" HUP; while :; do sleep 0.05; done`, mark)
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=50"},
		"--", "sh", "-c", script)
	before := e.waitReady(t, "args", "gpu", "gone", "same")
	env := []string{"AUTO_INFER_APP_DIR=" + app}

	// The next config: "new" takes the port of "gone".
	writeServers(t, cfg, logs,
		server{name: "args", port: p[0], server: "ctx_size = 4096"},
		server{name: "gpu", port: p[1], control: `gpu_ids = "1"`},
		server{name: "same", port: p[3]},
		server{name: "new", port: p[2]})

	r := runLB(t, env, "reload", "--dry-run")
	for _, want := range []string{"(dry run: nothing done)", "+ new: would start", "- gone: would stop and remove",
		"~ args: would restart: ctx_size 1024 → 4096\n",
		"~ gpu: would restart: gpu_ids 0 → 1", fmt.Sprintf("= same: unchanged (pid %d)", before["same"].PID)} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("dry run does not say %q: %v", want, r)
		}
	}
	if now := byName(e.status(t)); len(now) != 4 || now["args"].PID != before["args"].PID || now["gone"].State != "ready" {
		t.Fatalf("the dry run changed something: %+v", now)
	}

	r = runLB(t, env, "reload")
	if r.code != 0 || !strings.Contains(r.stdout, "+ new: started") || !regexp.MustCompile(`new: ready after`).MatchString(r.stdout) {
		t.Fatalf("reload: %v", r)
	}
	after := e.waitReady(t, "args", "gpu", "same", "new")
	if _, ok := after["gone"]; ok || processAlive(before["gone"].PID) {
		t.Errorf("removed instance still there (status %+v, alive %v)", after["gone"], processAlive(before["gone"].PID))
	}
	if after["same"].PID != before["same"].PID {
		t.Errorf("unchanged instance restarted: pid %d → %d", before["same"].PID, after["same"].PID)
	}
	for _, n := range []string{"args", "gpu"} {
		if after[n].PID == before[n].PID || processAlive(before[n].PID) {
			t.Errorf("changed instance %s not restarted: pid %d → %d", n, before[n].PID, after[n].PID)
		}
	}
	if l := readStandinLog(t, after["args"].LogFile); !slices.Contains(l.argv, "4096") || l.pid != after["args"].PID {
		t.Errorf("args runs %v (pid %d)", l.argv, l.pid)
	}
	if l := readStandinLog(t, after["gpu"].LogFile); l.env["CUDA_VISIBLE_DEVICES"] != "1" {
		t.Errorf("gpu runs with %v", l.env)
	}

	// An invalid file: refused with every problem and its line; nothing
	// changes.
	good, _ := os.ReadFile(cfg)
	writeFile(t, cfg, string(good)+"[instance.bad.control]\ngpu_id = \"0\"\n[instance.bad.server]\nport = 0\n")
	r = runLB(t, env, "reload")
	if r.code != 2 || !strings.Contains(r.stderr, "cfg.toml:") || !strings.Contains(r.stderr, "2 problem(s); nothing changed: the previous plan keeps running") ||
		!regexp.MustCompile(`cfg\.toml:\d+: instance\.bad\.control\.gpu_id: unknown key`).MatchString(r.stderr) ||
		!regexp.MustCompile(`cfg\.toml:\d+: instance\.bad\.server\.port: must be an integer from 1 to 65535`).MatchString(r.stderr) {
		t.Errorf("invalid config: %v", r)
	}
	e.waitOutput(t, `ERROR: reload \(llamaboot reload\): .*cfg\.toml: 2 problem\(s\)`, 10*time.Second)
	if now := byName(e.status(t)); len(now) != 4 || now["args"].PID != after["args"].PID || now["new"].PID != after["new"].PID {
		t.Errorf("the invalid config changed something: %+v", now)
	}

	// SIGHUP: reloads (here: "new" removed) and still reaches the command.
	writeServers(t, cfg, logs,
		server{name: "args", port: p[0], server: "ctx_size = 4096"},
		server{name: "gpu", port: p[1], control: `gpu_ids = "1"`},
		server{name: "same", port: p[3]})
	e.cmd.Process.Signal(syscall.SIGHUP)
	e.waitOutput(t, `reload \(SIGHUP\) of .*cfg\.toml: 0 added, 0 changed, 1 removed, 3 unchanged`, 10*time.Second)
	e.waitOutput(t, `new removed from supervision`, 10*time.Second)
	waitFor(t, "SIGHUP to reach the command", 10*time.Second, func() bool { b, _ := os.ReadFile(mark); return strings.Contains(string(b), "HUP") })
	if now := byName(e.status(t)); len(now) != 3 || now["same"].PID != before["same"].PID {
		t.Errorf("after SIGHUP: %+v", now)
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	e.wait(t, 15*time.Second)
}

// TestReloadWithoutConfig: a supervisor that serves no config refuses a
// reload as bad input, and SIGHUP only reaches the command.
func TestReloadWithoutConfig(t *testing.T) {
	app := t.TempDir()
	e := startEntry(t, app, nil)
	e.waitOutput(t, `no command given`, 10*time.Second)
	r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "reload")
	if r.code != 2 || !strings.Contains(r.stderr, "serves no config") {
		t.Errorf("%v", r)
	}
	e.cmd.Process.Signal(syscall.SIGHUP)
	e.cmd.Process.Signal(syscall.SIGTERM)
	if code := e.wait(t, 10*time.Second); code != 0 || strings.Contains(e.out.String(), "reload") {
		t.Errorf("exit %d\n%s", code, e.out.String())
	}
}

// configMap lays out dir as Kubernetes mounts a ConfigMap: cfg.toml links
// to ..data/cfg.toml and ..data links to a timestamped directory; an update
// writes a new directory and renames a fresh link over ..data.
type configMap struct {
	dir string
	gen int
}

func (c *configMap) publish(t *testing.T, content string) {
	t.Helper()
	c.gen++
	ts := fmt.Sprintf("..2026_01_01_00_00_%02d.%d", c.gen, c.gen)
	writeFile(t, filepath.Join(c.dir, ts, "cfg.toml"), content)
	tmp := filepath.Join(c.dir, "..data_tmp")
	must(t, os.Symlink(ts, tmp))
	must(t, os.Rename(tmp, filepath.Join(c.dir, "..data")))
	if c.gen == 1 {
		must(t, os.Symlink("..data/cfg.toml", filepath.Join(c.dir, "cfg.toml")))
	} else {
		must(t, os.RemoveAll(filepath.Join(c.dir, fmt.Sprintf("..2026_01_01_00_00_%02d.%d", c.gen-1, c.gen-1))))
	}
}

// TestReloadWatchesConfigMapSwap: with AUTO_INFER_LLAMA_CPP_WATCH=1 a
// ConfigMap-style ..data swap is picked up and applied; a bad version is
// refused (old plan kept) and the next good one applied.
func TestReloadWatchesConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	app, logs := filepath.Join(dir, "app"), filepath.Join(dir, "logs")
	cm := &configMap{dir: filepath.Join(dir, "config")}
	p := freePorts(t, 2)
	render := func(servers ...server) string {
		f := filepath.Join(dir, "render.toml")
		writeServers(t, f, logs, servers...)
		b, _ := os.ReadFile(f)
		return string(b)
	}
	cm.publish(t, render(server{name: "a", port: p[0]}))
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + filepath.Join(cm.dir, "cfg.toml"),
		"AUTO_INFER_LLAMA_CPP_WATCH=1", "STANDIN_LOAD_MS=50"}, "--watch-interval", "100ms")
	e.waitOutput(t, `watching .*cfg\.toml for changes \(every 100ms\)`, 10*time.Second)
	before := e.waitReady(t, "a")

	cm.publish(t, render(server{name: "a", port: p[0]}, server{name: "b", port: p[1]}))
	e.waitOutput(t, `reload \(the config changed\) of .*: 1 added, 0 changed, 0 removed, 1 unchanged`, 20*time.Second)
	after := e.waitReady(t, "a", "b")
	if after["a"].PID != before["a"].PID {
		t.Errorf("a restarted by a reload that did not change it: pid %d → %d", before["a"].PID, after["a"].PID)
	}

	cm.publish(t, render(server{name: "a", port: p[0]})+"[instance.b.server]\nport = \"x\"\n")
	e.waitOutput(t, `reload \(the config changed\): .*cfg\.toml: 1 problem\(s\); nothing changed`, 20*time.Second)
	if now := byName(e.status(t)); len(now) != 2 || now["b"].PID != after["b"].PID {
		t.Errorf("a refused config changed something: %+v", now)
	}

	cm.publish(t, render(server{name: "a", port: p[0]}))
	e.waitOutput(t, `reload \(the config changed\) of .*: 0 added, 0 changed, 1 removed, 1 unchanged`, 20*time.Second)
	e.waitOutput(t, `b removed from supervision`, 20*time.Second)
	e.cmd.Process.Signal(syscall.SIGTERM)
	e.wait(t, 15*time.Second)
}

// TestReloadNotReadyExits1: a reload whose restarted instance cannot
// start says so and exits 1.
func TestReloadNotReadyExits1(t *testing.T) {
	dir := t.TempDir()
	app, cfg := filepath.Join(dir, "app"), filepath.Join(dir, "cfg.toml")
	p := freePorts(t, 1)
	writeServers(t, cfg, filepath.Join(dir, "logs"), server{name: "a", port: p[0]})
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=50"})
	e.waitReady(t, "a")
	b, _ := os.ReadFile(cfg)
	writeFile(t, cfg, strings.Replace(string(b), standin, filepath.Join(dir, "no-such-llama-server"), 1))
	r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "reload")
	if r.code != 1 || !strings.Contains(r.stdout, "~ a: restarted: executable") || !strings.Contains(r.stdout, "a: failed") {
		t.Errorf("%v", r)
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	e.wait(t, 15*time.Second)
}

// A reload refused for a problem also says the warnings plan would say, and
// a misspelt server key is one of the problems (the stand-in's flags are
// known): nothing changes.
func TestReloadReportsProblemsAndWarnings(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	cfg, logs := filepath.Join(dir, "cfg.toml"), filepath.Join(dir, "logs")
	p := freePorts(t, 1)
	writeServers(t, cfg, logs, server{name: "a", port: p[0]})
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=50"})
	before := e.waitReady(t, "a")

	writeServers(t, cfg, logs, server{name: "a", port: p[0], control: "metrics_proxy = true", server: "n_gpu_layer = 99"})
	r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "reload")
	problem := `instance.a.server.n_gpu_layer: ` + standin + ` has no flag --n-gpu-layer (did you mean "n_gpu_layers"?)`
	warning := `warning: ` + cfg + `:8: instance.a.control.metrics_proxy: llama-server serves /metrics only with metrics = true`
	if r.code != 2 || !strings.Contains(r.stderr, cfg+":11: "+problem) || !strings.Contains(r.stderr, warning) || strings.Contains(r.stderr, "warning: "+cfg+":11") {
		t.Errorf("want exit 2, the misspelt key as a problem and the metrics_proxy warning:\n%v", r)
	}
	if after := byName(e.status(t)); after["a"].PID != before["a"].PID {
		t.Errorf("a refused reload restarted a: pid %d → %d", before["a"].PID, after["a"].PID)
	}
}

// TestReloadPortCycle swaps the ports of two instances and turns three
// round, ten reloads in a row, through the built binary: each reload
// exits 0 and every instance is ready on its new port, its own process
// listening there. Restarted one by one, a cycle found its new port still
// held by the other's old process ("port taken") in about half of them.
func TestReloadPortCycle(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	cfg, logs := filepath.Join(dir, "cfg.toml"), filepath.Join(dir, "logs")
	names := []string{"a", "b", "c", "d", "e"}
	p := freePorts(t, len(names))
	ports := map[string]int{"a": p[0], "b": p[1], "c": p[2], "d": p[3], "e": p[4]}
	write := func() {
		var servers []server
		for _, n := range names {
			servers = append(servers, server{name: n, port: ports[n]})
		}
		writeServers(t, cfg, logs, servers...)
	}
	write()
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=20"})
	e.waitReady(t, names...)
	env := []string{"AUTO_INFER_APP_DIR=" + app}
	for i := range 10 {
		ports["a"], ports["b"] = ports["b"], ports["a"]                         // a swap
		ports["c"], ports["d"], ports["e"] = ports["d"], ports["e"], ports["c"] // and a cycle of three
		write()
		if r := runLB(t, env, "reload"); r.code != 0 {
			t.Fatalf("reload %d: %v", i+1, r)
		}
		st := byName(e.status(t))
		for _, n := range names {
			in := st[n]
			if in.State != "ready" || in.Port != ports[n] || !launch.ListensOn(in.PID, ports[n]) {
				t.Fatalf("reload %d: %s is %s on port %d (pid %d, listening on %d: %v), want ready on %d",
					i+1, n, in.State, in.Port, in.PID, ports[n], launch.ListensOn(in.PID, ports[n]), ports[n])
			}
		}
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	e.wait(t, 15*time.Second)
}
