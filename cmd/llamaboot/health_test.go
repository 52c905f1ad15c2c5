package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/llamaboot/llamaboot/internal/health"
)

// watchConfig writes a config of stand-in instances on free ports, with
// control and server lines shared by all of them.
func watchConfig(t *testing.T, dir, control, server string, names ...string) (string, []int) {
	t.Helper()
	ports := freePorts(t, len(names))
	var b strings.Builder
	fmt.Fprintf(&b, "[master]\nllama_cpp_path = %q\n[instance.control]\nlog_dir = %q\n%s\n[instance.server]\nhost = \"127.0.0.1\"\n%s\n",
		standin, filepath.Join(dir, "logs"), control, server)
	for i, n := range names {
		fmt.Fprintf(&b, "[instance.%s.server]\nport = %d\n", n, ports[i])
	}
	return writeFile(t, filepath.Join(dir, "cfg.toml"), b.String()), ports
}

func healthcheck(t *testing.T, app string, args ...string) result {
	t.Helper()
	return runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, append([]string{"healthcheck"}, args...)...)
}

func TestHealthcheckExitCodes(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	if r := healthcheck(t, app); r.code != 1 || !strings.Contains(r.stderr, "no supervisor is running") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("no supervisor: %s", r)
	}

	// Loading (it never finishes here): not ready, but live.
	cfg, _ := watchConfig(t, dir, "", "", "a")
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=600000"})
	e.waitOutput(t, `a started: pid`, 10*time.Second)
	r := healthcheck(t, app)
	if r.code != 1 || !strings.HasPrefix(r.stdout, "not ready: a: starting for ") || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("loading: %s", r)
	}
	if r := healthcheck(t, app, "--live"); r.code != 0 || !strings.HasPrefix(r.stdout, "live: ") {
		t.Errorf("loading is live: %s", r)
	}
	if r := healthcheck(t, app, "--instance", "zz"); r.code != 2 || !strings.Contains(r.stderr, `no such instance: "zz" (supervised: a)`) {
		t.Errorf("unknown instance: %s", r)
	}
	if r := runLB(t, nil, "healthcheck", "--app-dir", app, "extra"); r.code != 2 {
		t.Errorf("stray argument: %s", r)
	}
}

func TestHealthcheckAndHTTPEndpoint(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	cfg, _ := watchConfig(t, dir, "metrics_proxy = true", "metrics = true", "a", "b")
	listen := freePorts(t, 1)[0]
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=100",
		fmt.Sprintf("AUTO_INFER_LLAMA_CPP_METRICS_ADDR=127.0.0.1:%d", listen)})
	e.waitOutput(t, fmt.Sprintf(`serving /livez, /readyz and /metrics on http://127.0.0.1:%d`, listen), 10*time.Second)
	e.waitOutput(t, `a ready after`, 10*time.Second)
	e.waitOutput(t, `b ready after`, 10*time.Second)
	if r := healthcheck(t, app); r.code != 0 || r.stdout != "ready: a, b\n" {
		t.Errorf("ready: %s", r)
	}
	if r := healthcheck(t, app, "--instance", "b", "--live"); r.code != 0 {
		t.Errorf("b live: %s", r)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", listen)
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	code, body := get("/readyz")
	var h health.Health
	if err := json.Unmarshal([]byte(body), &h); err != nil || code != 200 || !h.OK || len(h.Instances) != 2 || !h.Instances[1].Ready {
		t.Errorf("/readyz: %d %s", code, body)
	}

	// A stopped instance: not ready (exit 1, /readyz 503), still live.
	if r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "stop", "b"); r.code != 0 {
		t.Fatal(r)
	}
	if r := healthcheck(t, app); r.code != 1 || r.stdout != "not ready: b: stopped on request (llamaboot start b brings it back)\n" {
		t.Errorf("b stopped: %s", r)
	}
	if r := healthcheck(t, app, "--instance", "a"); r.code != 0 {
		t.Errorf("a alone is ready: %s", r)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, `"why": "stopped on request`) {
		t.Errorf("/readyz with b stopped: %d %s", code, body)
	}
	if code, _ := get("/livez"); code != 200 {
		t.Errorf("/livez with b stopped: %d", code)
	}

	// The metrics follow the supervisor's events on their own
	// subscription: scrape until b's exit is there.
	var fams map[string]*dto.MetricFamily
	waitFor(t, "b's exit in /metrics", 10*time.Second, func() bool {
		code, body := get("/metrics")
		parser := expfmt.NewTextParser(model.LegacyValidation)
		var err error
		if fams, err = parser.TextToMetricFamilies(strings.NewReader(body)); err != nil || code != 200 {
			t.Fatalf("/metrics: %d %v\n%s", code, err, body)
		}
		_, ok := sample(fams, "llamaboot_instance_last_exit_code", map[string]string{"instance": "b"})
		return ok
	})
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"llamaboot_instance_state", map[string]string{"instance": "a", "state": "ready"}, 1},
		{"llamaboot_instance_state", map[string]string{"instance": "b", "state": "stopped"}, 1},
		{"llamaboot_instance_ready", map[string]string{"instance": "a"}, 1},
		{"llamaboot_instance_ready", map[string]string{"instance": "b"}, 0},
		{"llamaboot_instance_restarts_total", map[string]string{"instance": "a", "reason": "crash"}, 0},
		{"llamaboot_instance_last_exit_code", map[string]string{"instance": "b"}, 0}, // the stand-in exits 0 on SIGTERM
		// The stand-in's own /metrics, re-exposed with the instance label.
		{"llamacpp:tokens_predicted_total", map[string]string{"instance": "a"}, 0},
		{"llamaboot_metrics_proxy_up", map[string]string{"instance": "a"}, 1},
		{"llamaboot_metrics_proxy_up", map[string]string{"instance": "b"}, 0},
	} {
		got, ok := sample(fams, c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if v, ok := sample(fams, "llamaboot_instance_time_to_ready_seconds", map[string]string{"instance": "a"}); !ok || v <= 0 {
		t.Errorf("time to ready of a: %v %v", v, ok)
	}
	if v, ok := sample(fams, "llamaboot_supervisor_uptime_seconds", nil); !ok || v <= 0 {
		t.Errorf("supervisor uptime: %v %v", v, ok)
	}
}

// sample is the value of the series of family name with labels (among
// others).
func sample(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		}
		return m.GetUntyped().GetValue(), true
	}
	return 0, false
}

func TestListenRefusedAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	// Under STRICT a port that cannot be bound ends the boot; without, it
	// is said and the boot goes on.
	e := startEntry(t, filepath.Join(dir, "app"), []string{"AUTO_INFER_LLAMA_CPP_STRICT=1"}, "--listen", ln.Addr().String(), "--", "sleep", "60")
	if code := e.wait(t, 15*time.Second); code != 1 || !strings.Contains(e.out.String(), "listen on "+ln.Addr().String()+" for /livez, /readyz and /metrics") {
		t.Errorf("strict: exit %d\n%s", code, e.out)
	}
	e = startEntry(t, filepath.Join(dir, "app2"), nil, "--listen", ln.Addr().String(), "--", "true")
	if code := e.wait(t, 15*time.Second); code != 0 || !strings.Contains(e.out.String(), "address already in use") {
		t.Errorf("not strict: exit %d\n%s", code, e.out)
	}
}

// Readiness covers the boot: while the config is loaded and its instances
// started (here, a STRICT boot downloading a model that trickles) the
// supervisor answers but is not ready; asked to serve a config it has no
// instance of (a config that did not load, master.enable = false), it is
// not ready and says why. Before this, each answered "ready: no instance
// is supervised".
func TestHealthcheckCoversTheBoot(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		http.Error(w, "gone", http.StatusNotFound)
	}))
	defer srv.Close()
	defer close(release)
	ports := freePorts(t, 1)
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[master]\nllama_cpp_path = %q\n[instance.control]\nlog_dir = %q\n"+
		"[instance.server]\nhost = \"127.0.0.1\"\n[instance.a.server]\nport = %d\nmodel = %q\n", standin, filepath.Join(dir, "logs"), ports[0], srv.URL+"/m.gguf"))
	env := []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "AUTO_INFER_LLAMA_CPP_STRICT=1",
		"AUTO_INFER_MODELS_DIR=" + filepath.Join(dir, "models")}
	e := startEntry(t, app, env)
	var r result
	waitFor(t, "the socket to answer", 10*time.Second, func() bool { r = healthcheck(t, app); return !strings.Contains(r.stderr, "no supervisor") })
	if r.code != 1 || r.stdout != "not ready: booting: loading "+cfg+" and starting its instances\n" {
		t.Errorf("during the boot: %s", r)
	}
	if r := healthcheck(t, app, "--live"); r.code != 0 {
		t.Errorf("a booting supervisor is live: %s", r)
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	e.wait(t, 15*time.Second)

	for _, c := range []struct{ name, cfg, want string }{
		{"bad config", "[instance.a.server]\nport = \"x\"\n", "did not load ("},
		{"disabled", "[master]\nenable = false\n[instance.a.server]\nport = 1\n", "master.enable = false: no server is started"},
		{"no config", "", "AUTO_INFER_LLAMA_CPP_CONFIG is not set"},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1"}
			prefix := "not ready: AUTO_INFER_LLAMA_CPP_ON_BOOT=1 but no instance is supervised: "
			if c.cfg != "" {
				cfg := writeFile(t, filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".toml"), c.cfg)
				env = append(env, "AUTO_INFER_LLAMA_CPP_CONFIG="+cfg)
				prefix += cfg
			}
			e := startEntry(t, app, env)
			e.waitOutput(t, `no command given`, 10*time.Second)
			r := healthcheck(t, app)
			if r.code != 1 || !strings.HasPrefix(r.stdout, prefix) || !strings.Contains(r.stdout, c.want) {
				t.Errorf("%s", r)
			}
			e.cmd.Process.Signal(syscall.SIGTERM)
			e.wait(t, 15*time.Second)
		})
	}
}
