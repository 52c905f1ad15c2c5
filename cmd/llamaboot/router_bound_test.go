package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// A group's max_loaded holds whatever started a member: a router request
// for long, then the operator's llamaboot start small, and long (idle,
// least recently used) is drained and stopped by the supervisor.
func TestRouterGroupBoundsOperatorStart(t *testing.T) {
	dir, app := t.TempDir(), t.TempDir()
	cfg, base, _ := routerConfig(t, dir, "[router.group.cpu]\nmax_loaded = 1",
		routed{"small", "on_demand = true\ngroup = \"cpu\"", ""},
		routed{"long", "on_demand = true\ngroup = \"cpu\"", ""},
	)
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=100"})
	stopAtEnd(t, e)
	e.waitOutput(t, `router: serving 2 instance`, 30*time.Second)
	if servedBy(t, call(t, "POST", base+"/tokenize", "", `{"model":"long"}`)) != "long" {
		t.Fatal("long")
	}
	if r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "start", "small"); r.code != 0 {
		t.Fatal(r)
	}
	e.waitOutput(t, `router: stopping long, the least recently used instance of group cpu, to keep the group to its max_loaded now that small was started`, 30*time.Second)
	waitFor(t, "long stopped", 30*time.Second, func() bool {
		st := routerStatus(t, e)
		return routeState(st, "long").State == "unloaded"
	})
	st := e.status(t)
	up := 0
	for _, in := range st.Instances {
		if in.PID != 0 {
			up++
		}
	}
	if rs := routerStatus(t, e); up != 1 || routeState(rs, "small").State != "loaded" {
		t.Errorf("after the operator's start of small, %d process(es) run (max_loaded 1): %+v\n%s", up, rs, e.out.String())
	}
	// A request for long now evicts small, as a router start always did.
	if servedBy(t, call(t, "POST", base+"/tokenize", "", `{"model":"long"}`)) != "long" {
		t.Fatal("long again")
	}
	if !strings.Contains(e.out.String(), "router: stopping small, the least recently used idle instance of its group, to make room for long") {
		t.Errorf("small was not evicted for long:\n%s", e.out.String())
	}
}

// One readiness rule for every instance: an on-demand instance down
// waiting for a request is ready; one the operator stopped is not, as a
// plain instance stopped on request is not.
func TestRouterHealthOperatorStop(t *testing.T) {
	dir, app := t.TempDir(), t.TempDir()
	cfg, _, _ := routerConfig(t, dir, "",
		routed{"small", "on_demand = true", ""},
		routed{"a", "", ""},
	)
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=100"})
	stopAtEnd(t, e)
	e.waitOutput(t, `router: serving 2 instance`, 30*time.Second)
	e.waitReady(t, "a")
	if r := healthcheck(t, app); r.code != 0 || !strings.Contains(r.stdout, "ready: small, a") {
		t.Errorf("on demand, down waiting for a request: %s", r)
	}
	if r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "stop", "small"); r.code != 0 {
		t.Fatal(r)
	}
	r := healthcheck(t, app)
	if r.code == 0 || !strings.Contains(r.stdout+r.stderr, "not ready: small: stopped on request (llamaboot start small brings it back)") {
		t.Errorf("on demand, stopped by the operator: %s", r)
	}
	if r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "start", "small"); r.code != 0 {
		t.Fatal(r)
	}
	if r := healthcheck(t, app); r.code != 0 {
		t.Errorf("started again: %s", r)
	}
}

// A client that hangs up mid-stream: entry says so once, in plain words,
// through its printer; no raw Go log line (httputil: ReverseProxy read
// error during body copy) reaches its output.
func TestRouterClientHangUpLogged(t *testing.T) {
	dir, app := t.TempDir(), t.TempDir()
	cfg, base, _ := routerConfig(t, dir, "", routed{"s", "", ""})
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_GEN_MS=1500"})
	stopAtEnd(t, e)
	e.waitOutput(t, `router: serving 1 instance`, 30*time.Second)
	e.waitReady(t, "s")
	checkStream(t, base+"/v1/chat/completions", "", "s", 2)
	e.waitOutput(t, `router: a client of s went away before its answer ended; the request to s was cancelled`, 30*time.Second)
	// The server's answer would have ended by now: nothing more comes.
	waitFor(t, "the server to see the cancel", 10*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "logs", "llama-server-s.log"))
		return strings.Contains(string(b), "request cancelled by the client")
	})
	servedBy(t, call(t, "POST", base+"/tokenize", "", `{"model":"s"}`))
	out := e.out.String()
	if strings.Contains(out, "httputil") || strings.Contains(out, "ReverseProxy") || strings.Count(out, "went away") != 1 {
		t.Errorf("entry's output after a client's hang-up:\n%s", out)
	}
}

// The reload report says what a reload does to the router: an on-demand
// instance added is not started, and router keys changed restart nothing
// but are said, in reload --dry-run too.
func TestRouterReloadReport(t *testing.T) {
	dir, app := t.TempDir(), t.TempDir()
	cfg, _, _ := routerConfig(t, dir, "", routed{"small", "on_demand = true\nidle_timeout = \"20s\"", ""})
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg})
	stopAtEnd(t, e)
	e.waitOutput(t, `router: serving 1 instance`, 30*time.Second)
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(b), `idle_timeout = "20s"`, `idle_timeout = "40s"`+"\naliases = [\"tiny\"]", 1)
	text += fmt.Sprintf("[instance.bad.control]\non_demand = true\n[instance.bad.server]\nport = %d\n", freePorts(t, 1)[0])
	writeFile(t, cfg, text)
	env := []string{"AUTO_INFER_APP_DIR=" + app}
	dry := runLB(t, env, "reload", "--dry-run")
	for _, want := range []string{"+ bad: would add, on demand (starts at its first request)", "~ small: aliases (none) → tiny; idle_timeout 20s → 40s (router; no restart)"} {
		if !strings.Contains(dry.stdout, want) {
			t.Errorf("reload --dry-run lacks %q:\n%s", want, dry)
		}
	}
	r := runLB(t, env, "reload")
	for _, want := range []string{"+ bad: added, on demand (starts at its first request)", "~ small: aliases (none) → tiny; idle_timeout 20s → 40s (router; no restart)"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("reload lacks %q:\n%s", want, r)
		}
	}
	if strings.Contains(r.stdout, "bad: started") || strings.Contains(r.stdout, "small: unchanged") {
		t.Errorf("reload says it started something:\n%s", r)
	}
	// Applied: the next reload finds nothing changed.
	if r := runLB(t, env, "reload"); !strings.Contains(r.stdout, "= small: unchanged") || !strings.Contains(r.stdout, "= bad: unchanged") {
		t.Errorf("second reload:\n%s", r)
	}
}

// plan counts on-demand instances apart from those launched at boot;
// status shows no last use (-) for an instance no request used yet.
func TestRouterPlanAndStatusOnDemand(t *testing.T) {
	dir, app := t.TempDir(), t.TempDir()
	cfg, base, _ := routerConfig(t, dir, "", routed{"small", "on_demand = true", ""}, routed{"long", "on_demand = true", ""})
	if plan := runLB(t, nil, "plan", "--config", cfg); !strings.Contains(plan.stdout, ": 2 instance(s): 0 to launch at boot, 2 on demand (started at their first request)\n") {
		t.Errorf("plan:\n%s", plan)
	}
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg})
	stopAtEnd(t, e)
	e.waitOutput(t, `router: serving 2 instance`, 30*time.Second)
	servedBy(t, call(t, "POST", base+"/tokenize", "", `{"model":"long"}`))
	sr := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "status")
	if !regexp.MustCompile(`(?m)^  small +unloaded +0 +0 +- +small$`).MatchString(sr.stdout) ||
		!regexp.MustCompile(`(?m)^  long +loaded +0 +0 +\d+s ago +long$`).MatchString(sr.stdout) {
		t.Errorf("status:\n%s", sr.stdout)
	}
}
