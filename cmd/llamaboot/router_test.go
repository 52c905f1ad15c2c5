package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/llamaboot/llamaboot/internal/router"
)

// routed is one instance of a router config: its control and server lines.
type routed struct{ name, control, server string }

// routerConfig writes a config of stand-in instances on free ports behind
// a router on a free port; it returns the file and the router's base URL.
func routerConfig(t *testing.T, dir, routerLines string, insts ...routed) (string, string, []int) {
	t.Helper()
	ports := freePorts(t, len(insts)+1)
	var b strings.Builder
	fmt.Fprintf(&b, "[master]\nllama_cpp_path = %q\n[router]\nlisten = \"127.0.0.1:%d\"\n%s\n[instance.control]\nlog_dir = %q\nliveness_interval = 0\n[instance.server]\nhost = \"127.0.0.1\"\n",
		standin, ports[0], routerLines, filepath.Join(dir, "logs"))
	for i, in := range insts {
		fmt.Fprintf(&b, "[instance.%s.control]\n%s\n[instance.%s.server]\nport = %d\nalias = %q\n%s\n", in.name, in.control, in.name, ports[i+1], in.name, in.server)
	}
	return writeFile(t, filepath.Join(dir, "cfg.toml"), b.String()), fmt.Sprintf("http://127.0.0.1:%d", ports[0]), ports[1:]
}

// stopAtEnd stops entry with SIGTERM when the test ends, so its
// instances are stopped through the supervisor: an entry SIGKILLed by the
// cleanup would leave them running.
func stopAtEnd(t *testing.T, e *entryProc) {
	t.Cleanup(func() {
		select {
		case <-e.done:
			return
		default:
		}
		e.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.done:
		case <-time.After(30 * time.Second):
		}
	})
}

// reply is an answer from the router.
type reply struct {
	code   int
	body   string
	header http.Header
	took   time.Duration
}

func (r reply) String() string { return fmt.Sprintf("%d %s", r.code, r.body) }

// call sends a request with an optional key (Bearer, or x-api-key when it
// starts with "x:").
func call(t *testing.T, method, url, key, body string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if k, ok := strings.CutPrefix(key, "x:"); ok {
		req.Header.Set("x-api-key", k)
	} else if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	began := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{code: resp.StatusCode, body: string(b), header: resp.Header, took: time.Since(began)}
}

// apiError reads an OpenAI-shaped error.
func apiError(t *testing.T, r reply) (msg, typ string) {
	t.Helper()
	var e struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    int    `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(r.body), &e); err != nil || e.Error.Message == "" || e.Error.Code != r.code {
		t.Fatalf("not an OpenAI error: %s (%v)", r, err)
	}
	return e.Error.Message, e.Error.Type
}

func servedBy(t *testing.T, r reply) string {
	t.Helper()
	var v struct {
		ServedBy string `json:"served_by"`
		Model    string `json:"model"`
	}
	if r.code != 200 || json.Unmarshal([]byte(r.body), &v) != nil {
		t.Fatalf("not served: %s", r)
	}
	return v.ServedBy
}

func chat(model string) string {
	return fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hi"}]}`, model)
}

// scrape reads the metrics endpoint.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

func routerStatus(t *testing.T, e *entryProc) router.Report {
	t.Helper()
	st := e.status(t)
	var rep router.Report
	b, _ := json.Marshal(st.Router)
	if err := json.Unmarshal(b, &rep); err != nil || rep.Listen == "" {
		t.Fatalf("status has no router: %s", b)
	}
	return rep
}

func routeState(rep router.Report, inst string) router.Status {
	for _, s := range rep.Instances {
		if s.Instance == inst {
			return s
		}
	}
	return router.Status{}
}

// One endpoint for every instance: routing by model and alias, keys, the
// upstream's own key, the model list, on-demand start shared by concurrent
// requests, idle stop, llama.cpp's router mode, operator stops, status,
// metrics, and a reload that changes only routes.
func TestRouterServesEveryInstance(t *testing.T) {
	dir, app := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(dir, "keys"), "# clients\nclient-key-1\n")
	mdir := filepath.Join(dir, "models")
	writeFile(t, filepath.Join(mdir, "x.gguf"), "")
	writeFile(t, filepath.Join(mdir, "y.gguf"), "")
	cfg, base, ports := routerConfig(t, dir, `api_keys_file = "keys"`,
		routed{"a", `aliases = ["gpt-mini"]`, `api_key = "upstream-secret"`},
		routed{"b", "on_demand = true\nidle_timeout = \"3s\"", ""},
		routed{"c", "", fmt.Sprintf("models_dir = %q", mdir)},
	)
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	// A completion streams a token every 10 ms for STANDIN_GEN_MS: 400 ms
	// leaves the stream check its 4 events on a loaded machine (100 ms once
	// gave 3).
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg,
		"AUTO_INFER_LLAMA_CPP_ROUTER_KEYS=client-key-2", "STANDIN_LOAD_MS=300", "STANDIN_GEN_MS=400"}, "--listen", metricsAddr)
	stopAtEnd(t, e)
	e.waitOutput(t, `router: serving 3 instance\(s\) on http://127\.0\.0\.1:\d+ \(API keys required\)`, 30*time.Second)
	e.waitOutput(t, `c ready`, 10*time.Second)
	e.waitOutput(t, `a ready`, 10*time.Second)

	// Keys: none, a wrong one → 401; the file's, the environment's, x-api-key → served.
	for _, key := range []string{"", "wrong", "x:wrong"} {
		r := call(t, "POST", base+"/v1/chat/completions", key, chat("a"))
		if r.code != 401 {
			t.Fatalf("key %q: %s", key, r)
		}
		apiError(t, r)
	}
	for _, key := range []string{"client-key-1", "client-key-2", "x:client-key-1"} {
		if got := servedBy(t, call(t, "POST", base+"/v1/chat/completions", key, chat("gpt-mini"))); got != "a" {
			t.Fatalf("key %q: served by %q", key, got)
		}
	}
	// a asks for its own key: only the router holds it.
	if r := call(t, "POST", fmt.Sprintf("http://127.0.0.1:%d/v1/chat/completions", ports[0]), "client-key-1", chat("a")); r.code != 401 {
		t.Fatalf("a without its key: %s", r)
	}
	if strings.Contains(e.out.String(), "client-key") || strings.Contains(e.out.String(), "upstream-secret") {
		t.Errorf("a key was logged:\n%s", e.out.String())
	}
	const key = "client-key-1"

	// Every routed endpoint reaches the instance with its path.
	for _, p := range router.Routed {
		r := call(t, "POST", base+p, key, chat("a"))
		if p == "/completion" || p == "/v1/chat/completions" {
			servedBy(t, r)
			continue
		}
		var v struct {
			Path     string `json:"path"`
			Model    string `json:"model"`
			ServedBy string `json:"served_by"`
		}
		if json.Unmarshal([]byte(r.body), &v); r.code != 200 || v.Path != p || v.ServedBy != "a" || v.Model != "a" {
			t.Errorf("POST %s: %s", p, r)
		}
	}
	// /upstream/NAME/... passes through to one instance.
	if r := call(t, "GET", base+"/upstream/gpt-mini/slots", key, ""); r.code != 200 || !strings.Contains(r.body, "is_processing") {
		t.Errorf("upstream: %s", r)
	}

	// Unknown model: 404 at once, listing the names.
	r := call(t, "POST", base+"/v1/chat/completions", key, chat("gpt-5"))
	msg, typ := apiError(t, r)
	if r.code != 404 || typ != "model_not_found" || !strings.Contains(msg, `"gpt-5"`) {
		t.Fatalf("unknown model: %s", r)
	}
	for _, n := range []string{"a", "gpt-mini", "b", "c", "x", "y"} {
		if !regexp.MustCompile(`\b` + n + `\b`).MatchString(msg) {
			t.Errorf("404 does not list %s: %s", n, msg)
		}
	}

	// The model list: every name, with its state; b is not running.
	var list struct {
		Data []struct{ ID, Instance, State string } `json:"data"`
	}
	r = call(t, "GET", base+"/v1/models", key, "")
	if err := json.Unmarshal([]byte(r.body), &list); err != nil || r.code != 200 {
		t.Fatalf("models: %s", r)
	}
	got := map[string]string{}
	for _, m := range list.Data {
		got[m.ID] = m.Instance + "/" + m.State
	}
	want := map[string]string{"a": "a/loaded", "gpt-mini": "a/loaded", "b": "b/unloaded", "c": "c/loaded", "x": "c/loaded", "y": "c/loaded"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("/v1/models %s: %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	if r2 := call(t, "GET", base+"/models", key, ""); r2.body != r.body && !strings.Contains(r2.body, `"gpt-mini"`) {
		t.Errorf("/models: %s", r2)
	}
	if routeState(routerStatus(t, e), "b").State != "unloaded" || strings.Contains(e.out.String(), "b started") {
		t.Fatalf("b ran before any request:\n%s", e.out.String())
	}

	// On demand: three requests at once share one start.
	var wg sync.WaitGroup
	replies := make([]reply, 3)
	for i := range replies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i] = call(t, "POST", base+"/tokenize", key, `{"model":"b","content":"hi"}`)
		}()
	}
	wg.Wait()
	for _, r := range replies {
		if servedBy(t, r) != "b" || r.took < 250*time.Millisecond {
			t.Errorf("on-demand b: %s after %s (it loads for 300ms)", r, r.took)
		}
	}
	if n := strings.Count(e.out.String(), "b started"); n != 1 {
		t.Errorf("b started %d times, want once:\n%s", n, e.out.String())
	}
	if st := routeState(routerStatus(t, e), "b"); st.State != "loaded" || st.LastUse.IsZero() || st.InFlight != 0 {
		t.Errorf("status of b after its requests: %+v", st)
	}
	// Idle: stopped after idle_timeout, started again by the next request.
	e.waitOutput(t, `router: stopping b: idle`, 10*time.Second)
	e.waitOutput(t, `b stopped`, 10*time.Second)
	if servedBy(t, call(t, "POST", base+"/completion", key, `{"model":"b"}`)) != "b" {
		t.Fatal("b after its idle stop")
	}

	// llama.cpp's router mode: the names its /models lists route to it,
	// and new files are found when asked for.
	var v struct {
		Model    string `json:"model"`
		ServedBy string `json:"served_by"`
	}
	r = call(t, "POST", base+"/v1/chat/completions", key, chat("y"))
	if json.Unmarshal([]byte(r.body), &v); v.ServedBy != "c" || v.Model != "y" {
		t.Errorf("router mode: %s", r)
	}
	writeFile(t, filepath.Join(mdir, "z.gguf"), "")
	time.Sleep(1100 * time.Millisecond) // unknown names ask the servers at most once a second
	if r = call(t, "POST", base+"/v1/chat/completions", key, chat("z")); servedBy(t, r) != "c" {
		t.Errorf("a new model of the router-mode instance: %s", r)
	}

	// Streaming: events come through as they are made.
	checkStream(t, base+"/v1/chat/completions", key, "a", 0)

	// Stopped by the operator: 503 at once, saying so; start brings it back.
	if r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "stop", "a"); r.code != 0 {
		t.Fatal(r)
	}
	r = call(t, "POST", base+"/v1/chat/completions", key, chat("gpt-mini"))
	if msg, _ := apiError(t, r); r.code != 503 || !strings.Contains(msg, "stopped by the operator") || r.took > 5*time.Second {
		t.Errorf("after stop: %s in %s", r, r.took)
	}
	if r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "start", "a"); r.code != 0 {
		t.Fatal(r)
	}
	servedBy(t, call(t, "POST", base+"/v1/chat/completions", key, chat("gpt-mini")))

	// status names the routes.
	sr := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "status")
	if !regexp.MustCompile(`(?m)^  a +loaded +0 +0 +\d+s ago +a, gpt-mini$`).MatchString(sr.stdout) ||
		!regexp.MustCompile(`(?m)^  c +loaded .* c, x, y, z$`).MatchString(sr.stdout) {
		t.Errorf("status:\n%s", sr.stdout)
	}

	// Metrics.
	fams := scrape(t, metricsAddr)
	if n, _ := sample(fams, "llamaboot_router_requests_total", map[string]string{"model": "gpt-mini", "code": "200"}); n < 4 {
		t.Errorf("requests_total{gpt-mini,200} = %v", n)
	}
	if n, _ := sample(fams, "llamaboot_router_requests_total", map[string]string{"model": "", "code": "401"}); n != 3 {
		t.Errorf("requests_total{401} = %v", n)
	}
	if n, _ := sample(fams, "llamaboot_router_requests_total", map[string]string{"model": "gpt-mini", "code": "503"}); n != 1 {
		t.Errorf("requests_total{gpt-mini,503} = %v", n)
	}
	if n, _ := sample(fams, "llamaboot_router_stops_total", map[string]string{"instance": "b", "reason": "idle"}); n < 1 {
		t.Errorf("stops_total{b,idle} = %v", n)
	}
	if n, _ := sample(fams, "llamaboot_router_starts_total", map[string]string{"instance": "b"}); n != 2 {
		t.Errorf("starts_total{b} = %v", n)
	}
	for _, name := range []string{"llamaboot_router_request_duration_seconds", "llamaboot_router_time_to_first_byte_seconds"} {
		if f := fams[name]; f == nil || f.Metric[0].GetHistogram().GetSampleCount() == 0 {
			t.Errorf("%s: %v", name, f)
		}
	}

	// A reload that changes only routes swaps them without restarting a.
	pidA := pidOf(t, e, "a")
	data, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(data), `aliases = ["gpt-mini"]`, `aliases = ["gpt-big"]`, 1)), 0o644)
	if r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "reload"); r.code != 0 {
		t.Fatal(r)
	}
	if servedBy(t, call(t, "POST", base+"/v1/chat/completions", key, chat("gpt-big"))) != "a" {
		t.Error("new alias")
	}
	if r := call(t, "POST", base+"/v1/chat/completions", key, chat("gpt-mini")); r.code != 404 {
		t.Errorf("old alias after reload: %s", r)
	}
	if pidOf(t, e, "a") != pidA {
		t.Error("a reload of routes restarted a")
	}
}

func pidOf(t *testing.T, e *entryProc, name string) int {
	t.Helper()
	for _, in := range e.status(t).Instances {
		if in.Name == name {
			return in.PID
		}
	}
	t.Fatalf("no instance %s", name)
	return 0
}

// checkStream asks for a streamed answer and checks that its events arrive
// spread out as they are made, not all at the end; with cancelAfter > 0 it
// hangs up after that many events and returns.
func checkStream(t *testing.T, url, key, model string, cancelAfter int) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(fmt.Sprintf(`{"model":%q,"stream":true,"messages":[{"role":"user","content":"hi"}]}`, model)))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	began := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream: %d %s %s", resp.StatusCode, resp.Header, b)
	}
	sc := bufio.NewScanner(resp.Body)
	var arrivals []time.Duration
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "data: ") {
			continue
		}
		arrivals = append(arrivals, time.Since(began))
		if cancelAfter > 0 && len(arrivals) == cancelAfter {
			return
		}
		if line == "data: [DONE]" {
			break
		}
	}
	if len(arrivals) < 4 {
		t.Fatalf("stream: %d events", len(arrivals))
	}
	// The first event must come long before the last: not buffered.
	if first, last := arrivals[0], arrivals[len(arrivals)-1]; last-first < 50*time.Millisecond {
		t.Errorf("events arrived together: first at %s, last at %s", first, last)
	}
}

// A group with max_loaded = 1: starting one evicts the least recently
// used idle member (drained and stopped by the supervisor), never one with
// a request in flight; a client's hang-up reaches the server.
func TestRouterGroupEvictsIdleOnly(t *testing.T) {
	dir, app := t.TempDir(), t.TempDir()
	cfg, base, _ := routerConfig(t, dir, "[router.group.gpu]\nmax_loaded = 1",
		routed{"p", "on_demand = true\ngroup = \"gpu\"", ""},
		routed{"q", "on_demand = true\ngroup = \"gpu\"", ""},
	)
	plan := runLB(t, nil, "plan", "--config", cfg)
	if !regexp.MustCompile(`(?m)^router on http://127\.0\.0\.1:\d+ \(llamaboot entry\): no API key asked for, max_wait 10m0s, max_queue 100, group gpu max_loaded 1$`).MatchString(plan.stdout) ||
		!strings.Contains(plan.stdout, "  routes      q (on demand, group gpu)\n") {
		t.Errorf("plan:\n%s", plan)
	}
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg,
		"STANDIN_LOAD_MS=200", "STANDIN_GEN_MS=1500"}, "--listen", metricsAddr)
	stopAtEnd(t, e)
	e.waitOutput(t, `router: serving 2 instance`, 30*time.Second)
	if servedBy(t, call(t, "POST", base+"/tokenize", "", `{"model":"p"}`)) != "p" {
		t.Fatal("p")
	}
	// q needs p's place: p is idle, so it goes.
	if servedBy(t, call(t, "POST", base+"/tokenize", "", `{"model":"q"}`)) != "q" {
		t.Fatal("q")
	}
	e.waitOutput(t, `router: stopping p, the least recently used idle instance of its group, to make room for q`, time.Second)
	if st := routerStatus(t, e); routeState(st, "p").State != "unloaded" || routeState(st, "q").State != "loaded" {
		t.Fatalf("after the eviction: %+v", st)
	}
	// q streams for 1.5 s; p waits for it to end instead of evicting it.
	streamDone := make(chan time.Time, 1)
	go func() {
		checkStream(t, base+"/v1/chat/completions", "", "q", 0)
		streamDone <- time.Now()
	}()
	waitFor(t, "q busy", 5*time.Second, func() bool { return routeState(routerStatus(t, e), "q").InFlight == 1 })
	pReply := make(chan reply, 1)
	go func() { pReply <- call(t, "POST", base+"/tokenize", "", `{"model":"p"}`) }()
	waitFor(t, "p waiting", 5*time.Second, func() bool { return routeState(routerStatus(t, e), "p").Queued == 1 })
	time.Sleep(300 * time.Millisecond)
	if st := routeState(routerStatus(t, e), "q"); st.InFlight != 1 || strings.Contains(e.out.String(), "to make room for p") {
		t.Errorf("q was asked to stop while its stream was in flight (%+v):\n%s", st, e.out.String())
	}
	fams := scrape(t, metricsAddr)
	if n, _ := sample(fams, "llamaboot_router_in_flight", map[string]string{"instance": "q"}); n != 1 {
		t.Errorf("in_flight{q} = %v", n)
	}
	if n, _ := sample(fams, "llamaboot_router_queued", map[string]string{"instance": "p"}); n != 1 {
		t.Errorf("queued{p} = %v", n)
	}
	r := <-pReply
	servedAt := time.Now()
	if servedBy(t, r) != "p" {
		t.Fatal(r)
	}
	ended := <-streamDone
	if servedAt.Before(ended) {
		t.Errorf("p was served at %s, before q's stream ended at %s: q was evicted with a request in flight", servedAt.Format(time.StampMilli), ended.Format(time.StampMilli))
	}
	fams = scrape(t, metricsAddr)
	if n, _ := sample(fams, "llamaboot_router_stops_total", map[string]string{"instance": "q", "reason": "evicted"}); n != 1 {
		t.Errorf("evictions of q: %v", n)
	}

	// A client that hangs up mid-stream cancels the server's work.
	checkStream(t, base+"/v1/chat/completions", "", "p", 2)
	waitFor(t, "the server to see the cancel", 5*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "logs", "llama-server-p.log"))
		return strings.Contains(string(b), "request cancelled by the client")
	})
}

// Waiting is bounded: by max_queue for each instance (503 at once) and
// max_wait (503 after it), both with Retry-After; an instance that fails
// to start is a 503 with the reason.
func TestRouterBoundsWaiting(t *testing.T) {
	dir, app := t.TempDir(), t.TempDir()
	cfg, base, ports := routerConfig(t, dir, "max_queue = 1\nmax_wait = \"3s\"",
		routed{"slow", "on_demand = true", ""},
		routed{"taken", "on_demand = true", ""},
	)
	// Someone else holds taken's port: it cannot start.
	ln, err := listenOn(ports[1])
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=8000"})
	stopAtEnd(t, e)
	e.waitOutput(t, `router: serving 2 instance`, 30*time.Second)
	first := make(chan reply, 1)
	go func() { first <- call(t, "POST", base+"/tokenize", "", `{"model":"slow"}`) }()
	waitFor(t, "one waiting", 5*time.Second, func() bool { return routeState(routerStatus(t, e), "slow").Queued == 1 })
	r := call(t, "POST", base+"/tokenize", "", `{"model":"slow"}`)
	if msg, _ := apiError(t, r); r.code != 503 || r.header.Get("Retry-After") == "" || !strings.Contains(msg, "router.max_queue") || r.took > 2*time.Second {
		t.Errorf("queue full: %s (Retry-After %q) in %s", r, r.header.Get("Retry-After"), r.took)
	}
	// Each instance has its own queue: with slow's full, a request for
	// taken still waits for its start (which fails: its port is held).
	r = call(t, "POST", base+"/tokenize", "", `{"model":"taken"}`)
	if msg, _ := apiError(t, r); r.code != 503 || !strings.Contains(msg, "taken failed:") || !strings.Contains(msg, "port") {
		t.Errorf("taken while slow's queue is full: %s", r)
	}
	r = <-first
	if msg, _ := apiError(t, r); r.code != 503 || r.header.Get("Retry-After") == "" || !strings.Contains(msg, "router.max_wait") || r.took < 2900*time.Millisecond || r.took > 7*time.Second {
		t.Errorf("waited past max_wait: %s (Retry-After %q) after %s", r, r.header.Get("Retry-After"), r.took)
	}
	r = call(t, "POST", base+"/tokenize", "", `{"model":"taken"}`)
	if msg, _ := apiError(t, r); r.code != 503 || !strings.Contains(msg, "taken failed:") || !strings.Contains(msg, "port") {
		t.Errorf("failed start: %s", r)
	}
}

func listenOn(port int) (net.Listener, error) {
	return net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
}

// A reload can add the router, move it and take it away; without
// [router] nothing listens.
func TestRouterComesAndGoesWithReload(t *testing.T) {
	dir, app := t.TempDir(), t.TempDir()
	cfg, base, _ := routerConfig(t, dir, "", routed{"a", "", ""})
	data, _ := os.ReadFile(cfg)
	withRouter := string(data)
	listen := regexp.MustCompile(`(?m)^\[router\]\nlisten = "[^"]+"\n`)
	writeFile(t, cfg, listen.ReplaceAllString(withRouter, ""))
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg})
	stopAtEnd(t, e)
	e.waitOutput(t, `a ready`, 30*time.Second)
	if _, err := http.Get(base + "/v1/models"); err == nil {
		t.Fatal("a router listens without [router]")
	}
	if st := e.status(t); st.Router != nil {
		t.Errorf("status has a router: %v", st.Router)
	}
	reload := func() {
		t.Helper()
		if r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "reload"); r.code != 0 {
			t.Fatal(r)
		}
	}
	writeFile(t, cfg, withRouter)
	reload()
	e.waitOutput(t, `router: serving 1 instance`, 10*time.Second)
	if servedBy(t, call(t, "POST", base+"/tokenize", "", `{"model":"a"}`)) != "a" {
		t.Fatal("after adding [router]")
	}
	// A new address: the old one stops listening.
	port2 := freePorts(t, 1)[0]
	base2 := fmt.Sprintf("http://127.0.0.1:%d", port2)
	writeFile(t, cfg, listen.ReplaceAllString(withRouter, fmt.Sprintf("[router]\nlisten = \"127.0.0.1:%d\"\n", port2)))
	reload()
	e.waitOutput(t, fmt.Sprintf(`router: moved from 127\.0\.0\.1:\d+ to http://127\.0\.0\.1:%d`, port2), 10*time.Second)
	if servedBy(t, call(t, "POST", base2+"/tokenize", "", `{"model":"a"}`)) != "a" {
		t.Fatal("on the new address")
	}
	if _, err := http.Get(base + "/v1/models"); err == nil {
		t.Error("the old address still listens")
	}
	writeFile(t, cfg, listen.ReplaceAllString(withRouter, ""))
	reload()
	e.waitOutput(t, `router on 127\.0\.0\.1:\d+ stopped: the config has no \[router\] now`, 10*time.Second)
	if _, err := http.Get(base2 + "/v1/models"); err == nil {
		t.Error("the router still listens after [router] was removed")
	}
}
