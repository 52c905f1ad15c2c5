package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/testutil"
)

// Supervision against the real llama-server (llama.cpp b9596 from
// ../shared/fixtures/real-llama, or $LLAMABOOT_REAL_BUNDLE and
// $LLAMABOOT_REAL_MODEL), through the built binary: the stand-in models
// it, these check that what the README promises holds for the real thing.

var (
	realOnce sync.Once
	realExe  string // the installed bundle's llama-server
	realErr  string
)

// realServer installs the real release archive once, with llamaboot
// install, and returns the fixture and the installed llama-server.
func realServer(t *testing.T) (testutil.RealLlama, string) {
	t.Helper()
	r := testutil.NeedRealLlama(t)
	realOnce.Do(func() {
		app := filepath.Join(filepath.Dir(llamaboot), "real-app")
		res := runLB(t, nil, "install", "--app-dir", app, r.Archive)
		exe := filepath.Join(app, "llama-cpp", "bin", "llama-server")
		if res.code != 0 {
			realErr = fmt.Sprintf("install %s: %s", r.Archive, res)
			return
		}
		if out, err := output(exe, "--version"); err != nil || !strings.Contains(out, "version: ") {
			realErr = fmt.Sprintf("installed %s --version: %v\n%s", exe, err, out)
			return
		}
		realExe = exe
	})
	if realErr != "" {
		t.Fatal(realErr)
	}
	return r, realExe
}

// fastLiveness is the watchdog the real-server tests run under: a hang is
// found within interval × failures + timeout = 4 s.
const fastLiveness = "liveness_interval = \"1s\"\nliveness_timeout = \"1s\"\nliveness_failures = 3"

// timedStop stops name and returns how long the answer took.
func timedStop(t *testing.T, app, name string) time.Duration {
	t.Helper()
	began := time.Now()
	if r := control(t, app, "stop", name); r.code != 0 {
		t.Fatalf("stop %s: %s", name, r)
	}
	return time.Since(began)
}

// realConfig writes a config of real llama-server instances on free
// ports: control lines shared by all, and each instance's server lines.
func realConfig(t *testing.T, dir, exe, control string, servers map[string]string) (string, map[string]int) {
	t.Helper()
	var names []string
	for n := range servers {
		names = append(names, n)
	}
	ports := freePorts(t, len(names))
	byName := map[string]int{}
	var b strings.Builder
	fmt.Fprintf(&b, "[master]\nllama_cpp_path = %q\n[instance.control]\nlog_dir = %q\n%s\n[instance.server]\nhost = \"127.0.0.1\"\nthreads = 1\n",
		exe, filepath.Join(dir, "logs"), control)
	for i, n := range names {
		byName[n] = ports[i]
		fmt.Fprintf(&b, "[instance.%s.server]\nport = %d\n%s\n", n, ports[i], servers[n])
	}
	return writeFile(t, filepath.Join(dir, "cfg.toml"), b.String()), byName
}

// post sends a JSON body and returns the status and the answer.
func post(t *testing.T, url, key, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("POST %s: %v", url, err)
		return 0, nil
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

func output(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func control(t *testing.T, app string, args ...string) result {
	t.Helper()
	return runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, args...)
}

func stopEntry(t *testing.T, e *entryProc) {
	t.Helper()
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	if code := e.wait(t, 30*time.Second); code != 0 {
		t.Errorf("entry exit %d\n%s", code, e.out.String())
	}
}

// TestRealServe: install, readiness, completion, logs (and -f), stop,
// start, restart and reload with the real server.
func TestRealServe(t *testing.T) {
	fx, exe := realServer(t)
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	cfg, ports := realConfig(t, dir, exe, fastLiveness+"\ndrain_timeout = \"5s\"",
		map[string]string{"a": fmt.Sprintf("model = %q\nctx_size = 512", fx.Model)})
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg})
	e.waitOutput(t, `a ready after`, 60*time.Second)
	pid := e.waitReady(t, "a")["a"].PID
	if r := healthcheck(t, app); r.code != 0 {
		t.Errorf("healthcheck: %s", r)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d", ports["a"])
	if code, m := post(t, url+"/completion", "", `{"prompt":"Hello","n_predict":8,"seed":42}`); code != 200 || m["content"] == nil {
		t.Errorf("completion: %d %v", code, m)
	}

	// logs, then logs -f sees the next request's lines as they come.
	if r := control(t, app, "logs", "a"); r.code != 0 || !strings.Contains(r.stdout, "server is listening on http://127.0.0.1:"+strconv.Itoa(ports["a"])) {
		t.Errorf("logs: %s", r)
	}
	follow := exec.Command(llamaboot, "logs", "-f", "--tail", "0", "a")
	follow.Env = cleanEnv("AUTO_INFER_APP_DIR=" + app)
	var fout testutil.SyncBuffer
	follow.Stdout, follow.Stderr = &fout, &fout
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // let it attach
	post(t, url+"/completion", "", `{"prompt":"Again","n_predict":4,"seed":42}`)
	waitFor(t, "logs -f to show the request", 10*time.Second, func() bool { return strings.Contains(fout.String(), "print_timing") })
	_ = follow.Process.Kill()
	_ = follow.Wait()

	// stop: the real server exits 0 on SIGTERM when idle; stopped, gone.
	began := time.Now()
	if r := control(t, app, "stop", "a"); r.code != 0 || !strings.Contains(r.stdout, "a: stopped") {
		t.Fatalf("stop: %s", r)
	}
	t.Logf("stop of an idle real server took %s", time.Since(began).Round(time.Millisecond))
	if processAlive(pid) {
		t.Errorf("pid %d alive after stop", pid)
	}
	if in := byName(e.status(t))["a"]; in.State != "stopped" || in.LastExit == nil || *in.LastExit != "exit code 0" {
		t.Errorf("after stop: %+v", in)
	}
	if r := control(t, app, "start", "a"); r.code != 0 {
		t.Fatalf("start: %s", r)
	}
	started := e.waitReady(t, "a")["a"].PID
	if r := control(t, app, "restart", "a"); r.code != 0 {
		t.Fatalf("restart: %s", r)
	}
	restarted := e.waitReady(t, "a")["a"]
	if restarted.PID == started || processAlive(started) {
		t.Errorf("restart: pid %d → %d (old alive: %v)", started, restarted.PID, processAlive(started))
	}

	// reload with a changed context size: restarted with the new argv.
	writeFile(t, cfg, strings.Replace(readFile(t, cfg), "ctx_size = 512", "ctx_size = 256", 1))
	if r := control(t, app, "reload"); r.code != 0 {
		t.Fatalf("reload: %s", r)
	}
	waitFor(t, "the reloaded instance", 60*time.Second, func() bool {
		in := byName(e.status(t))["a"]
		return in.State == "ready" && in.PID != restarted.PID
	})
	now := byName(e.status(t))["a"]
	if argv := readFile(t, fmt.Sprintf("/proc/%d/cmdline", now.PID)); !strings.Contains(argv, "--ctx-size\x00256") {
		t.Errorf("reloaded argv %q", argv)
	}
	if code, _ := post(t, url+"/completion", "", `{"prompt":"Hi","n_predict":4,"seed":42}`); code != 200 {
		t.Errorf("completion after reload: %d", code)
	}
	if in := byName(e.status(t))["a"]; in.Restarts != 0 {
		t.Errorf("restarts counted for operator actions: %+v", in)
	}
	stopEntry(t, e)
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRealWatchdogFindsFrozenWorker freezes the real server's main thread
// (its slot loop) with ptrace while its HTTP threads keep answering
// /health — llama.cpp issue 27388's hang — and clients keep sending it
// requests. Every probe it abandons makes the server log "cancel task",
// every client request a line of its own; none of that is progress. It must be found
// hung and restarted within interval × failures + timeout, plus one
// interval.
func TestRealWatchdogFindsFrozenWorker(t *testing.T) {
	fx, exe := realServer(t)
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	cfg, ports := realConfig(t, dir, exe, fastLiveness+"\nrestart = \"always\"",
		map[string]string{"a": fmt.Sprintf("model = %q", fx.Model)})
	port := ports["a"]
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg})
	e.waitOutput(t, `a ready after`, 60*time.Second)
	pid := e.waitReady(t, "a")["a"].PID
	time.Sleep(1500 * time.Millisecond) // a probe or two that answer first
	f, err := testutil.FreezeThread(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Thaw()
	frozen := time.Now()
	// Clients keep asking the hung server, as they do in production: each
	// request makes its HTTP threads log a line while the loop is stuck.
	// That must not pass for work.
	stopClients := make(chan struct{})
	defer close(stopClients)
	go func() {
		c := &http.Client{Timeout: 1500 * time.Millisecond}
		for {
			select {
			case <-stopClients:
				return
			case <-time.After(500 * time.Millisecond):
			}
			resp, err := c.Post(fmt.Sprintf("http://127.0.0.1:%d/v1/chat/completions", port), "application/json",
				strings.NewReader(`{"messages":[{"role":"user","content":"hi"}],"max_tokens":4}`))
			if err == nil {
				resp.Body.Close()
			}
		}
	}()
	e.waitOutput(t, `a hung: 3 liveness probe\(s\) in a row failed over [0-9.]+m?s with its threads idle, no log output and no token progress`, 30*time.Second)
	found := time.Since(frozen)
	bound := 3*time.Second + time.Second + time.Second
	t.Logf("frozen worker found hung %s after the freeze (bound %s)", found.Round(time.Millisecond), bound)
	// On a loaded 2-core machine a probe can start late: allow the bound
	// twice over here; the figure is logged and the rule itself is
	// unit-tested on a fake clock.
	if found > 2*bound {
		t.Errorf("found hung %s after the freeze, bound %s", found, bound)
	}
	if !strings.Contains(readFile(t, filepath.Join(dir, "logs", "llama-server-a.log")), "cancel task") {
		t.Error("the server never logged 'cancel task': the test did not make the probes' echoes")
	}
	waitFor(t, "a new ready process", 60*time.Second, func() bool {
		in := byName(e.status(t))["a"]
		return in.State == "ready" && in.PID != pid
	})
	if processAlive(pid) {
		t.Errorf("the frozen server %d is alive", pid)
	}
	if in := byName(e.status(t))["a"]; in.Restarts != 1 || in.LastExit == nil || *in.LastExit != "killed by SIGKILL" {
		t.Errorf("status after the hang: %+v", in)
	}
	stopEntry(t, e)
}

// TestRealWatchdogLeavesLongPromptAlone: a ~30k-token prompt in one batch
// keeps /slots silent for many seconds while the slot loop burns a core:
// busy, not hung, under liveness 1s/1s/3.
func TestRealWatchdogLeavesLongPromptAlone(t *testing.T) {
	fx, exe := realServer(t)
	fx = testutil.NeedRealLlama64K(t)
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	cfg, ports := realConfig(t, dir, exe, fastLiveness+"\nrestart = \"always\"",
		map[string]string{"a": fmt.Sprintf("model = %q\nctx_size = 65536\nbatch_size = 32768\nubatch_size = 32768\nthreads = 2", fx.Model64K)})
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg})
	e.waitOutput(t, `a ready after`, 60*time.Second)
	pid := e.waitReady(t, "a")["a"].PID
	prompt := strings.Repeat("hello ", 30000)
	began := time.Now()
	code, m := post(t, fmt.Sprintf("http://127.0.0.1:%d/completion", ports["a"]), "", fmt.Sprintf(`{"prompt":%q,"n_predict":1,"seed":42}`, prompt))
	took := time.Since(began)
	if code != 200 || m["tokens_evaluated"] == nil || m["tokens_evaluated"].(float64) < 25000 {
		t.Fatalf("the long prompt: %d %v after %s\n%s\nlog:\n%s", code, m["tokens_evaluated"], time.Since(began), e.out.String(),
			tail(readFile(t, filepath.Join(dir, "logs", "llama-server-a.log")), 30))
	}
	t.Logf("a %v-token prompt took %s", m["tokens_evaluated"], took.Round(time.Millisecond))
	out := e.out.String()
	if strings.Contains(out, "a hung") {
		t.Fatalf("a busy server was killed as hung:\n%s", out)
	}
	if took > 5*time.Second && !regexp.MustCompile(`a busy, left alone: .*its main thread used`).MatchString(out) {
		t.Errorf("the prompt kept /slots silent %s, but no busy line names the CPU:\n%s", took, out)
	}
	if in := byName(e.status(t))["a"]; in.PID != pid || in.Restarts != 0 || in.State != "ready" {
		t.Errorf("after the prompt: %+v", in)
	}
	stopEntry(t, e)
}

// TestRealAPIKey: a server with an API key (from api_key_file) at
// log_verbosity 0 is probed, drained and scraped with its key: no
// restart, a quick stop, the key never shown. A key llamaboot does not
// hold is said once and never taken for a hang.
func TestRealAPIKey(t *testing.T) {
	fx, exe := realServer(t)
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	keyFile := writeFile(t, filepath.Join(dir, "keys"), "k-from-file-1234\n")
	cfg, ports := realConfig(t, dir, exe, fastLiveness+"\ndrain_timeout = \"10s\"\nrestart = \"always\"",
		map[string]string{
			"a": fmt.Sprintf("model = %q\napi_key_file = %q\nlog_verbosity = 0\nmetrics = true", fx.Model, keyFile),
			"b": fmt.Sprintf("model = %q\napi_key = \"inline-SECRET-5678\"\nlog_verbosity = 0", fx.Model),
		})
	if r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "plan", "--config", cfg); r.code != 0 || strings.Contains(r.stdout+r.stderr, "inline-SECRET") ||
		!strings.Contains(r.stdout, "--api-key '***'") && !strings.Contains(r.stdout, "--api-key ***") {
		t.Errorf("plan shows the key, or not its place:\n%s", r)
	}
	if r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "plan", "--json", "--config", cfg); strings.Contains(r.stdout, "inline-SECRET") {
		t.Errorf("plan --json shows the key:\n%s", r.stdout)
	}
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg}, "--listen", "127.0.0.1:0")
	e.waitReady(t, "a", "b")
	// Idle for a while under the watchdog: every probe answers.
	time.Sleep(12 * time.Second)
	st := byName(e.status(t))
	for _, n := range []string{"a", "b"} {
		if st[n].Restarts != 0 || st[n].State != "ready" {
			t.Errorf("%s after 12 s idle: %+v", n, st[n])
		}
	}
	out := e.out.String()
	if strings.Contains(out, "hung") || strings.Contains(out, "busy") || strings.Contains(out, "cannot see its worker loop") {
		t.Errorf("an idle keyed server was judged:\n%s", out)
	}
	for _, f := range []string{filepath.Join(dir, "logs", "llama-server-b.log")} {
		if log := readFile(t, f); strings.Contains(log, "inline-SECRET") || !strings.Contains(log, "***") {
			t.Errorf("the log header shows the key (or no mark where it was):\n%.600s", log)
		}
	}
	if r := control(t, app, "status", "--json"); strings.Contains(r.stdout, "inline-SECRET") {
		t.Errorf("status shows the key")
	}
	if code, _ := post(t, fmt.Sprintf("http://127.0.0.1:%d/completion", ports["a"]), "k-from-file-1234", `{"prompt":"x","n_predict":2,"seed":42}`); code != 200 {
		t.Errorf("completion with the key: %d", code)
	}
	// Stop: drained with the key (no busy slot: at once), SIGTERM, exit 0.
	took := timedStop(t, app, "a")
	t.Logf("stop of an idle keyed real server took %s", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("stop took %s: the drain waited on a 401", took)
	}

	// The key file now holds another key than the one the server read at
	// its start: the watchdog's key is refused. Said once; not hung.
	writeFile(t, keyFile, "a-new-key\n")
	if r := control(t, app, "start", "a"); r.code != 0 {
		t.Fatalf("start: %s", r)
	}
	writeFile(t, keyFile, "not-the-servers-key\n")
	e.waitOutput(t, `a: the watchdog cannot see its worker loop: GET /slots answered 401 Unauthorized to the key of its api_key/api_key_file`, 15*time.Second)
	time.Sleep(5 * time.Second)
	if in := byName(e.status(t))["a"]; in.State != "ready" || in.Restarts != 0 {
		t.Errorf("a refused watchdog restarted it: %+v", in)
	}
	if n := strings.Count(e.out.String(), "cannot see its worker loop"); n != 1 {
		t.Errorf("the refusal said %d times", n)
	}
	stopEntry(t, e)
}

// TestRealRouterMode: an instance in llama.cpp's own router mode
// (models_dir, no model) is probed through its loaded models' children
// (its own /slots and /metrics want a model name, and /slots?model=X
// would load X): no restart while idle, no model loaded by a probe, status
// lists its models, a quick stop that takes the children along.
func TestRealRouterMode(t *testing.T) {
	fx, exe := realServer(t)
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	models := filepath.Join(dir, "models")
	for _, n := range []string{"alpha", "beta"} {
		b, err := os.ReadFile(fx.Model)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(models, n+".gguf"), string(b))
	}
	cfg, ports := realConfig(t, dir, exe, fastLiveness+"\ndrain_timeout = \"10s\"\nrestart = \"always\"",
		map[string]string{"r": fmt.Sprintf("models_dir = %q\nmetrics = true", models)})
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg})
	pid := e.waitReady(t, "r")["r"].PID
	time.Sleep(6 * time.Second)
	in := byName(e.status(t))["r"]
	if in.Restarts != 0 || in.PID != pid {
		t.Fatalf("an idle router-mode instance was restarted: %+v\n%s", in, e.out.String())
	}
	for _, m := range in.Models {
		if m.Status != "unloaded" {
			t.Errorf("a probe loaded a model: %+v", in.Models)
		}
	}
	if len(in.Models) != 2 {
		t.Errorf("status lists %d models: %+v (%s)", len(in.Models), in.Models, in.ModelsErr)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d", ports["r"])
	if code, m := post(t, url+"/v1/chat/completions", "", `{"model":"alpha","messages":[{"role":"user","content":"hi"}],"max_tokens":4,"seed":42}`); code != 200 {
		t.Fatalf("chat through the router: %d %v", code, m)
	}
	time.Sleep(4 * time.Second) // the loaded child is probed too
	in = byName(e.status(t))["r"]
	loaded := map[string]string{}
	for _, m := range in.Models {
		loaded[m.ID] = m.Status
	}
	if loaded["alpha"] != "loaded" || loaded["beta"] != "unloaded" || in.Restarts != 0 {
		t.Errorf("after a request for alpha: %+v", in)
	}
	if r := control(t, app, "status"); !regexp.MustCompile(`models: alpha \(loaded, port \d+\), beta \(unloaded\)`).MatchString(r.stdout) {
		t.Errorf("status text:\n%s", r.stdout)
	}
	if strings.Contains(e.out.String(), "hung") {
		t.Errorf("judged hung:\n%s", e.out.String())
	}
	took := timedStop(t, app, "r")
	t.Logf("stop of an idle router-mode instance with a loaded model took %s", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("stop took %s", took)
	}
	stopEntry(t, e)
}

// TestRealDrainWithRequestInFlight: a stop waits for the request in
// flight (the real server would otherwise hang in "cleaning up" until
// SIGKILL and cut the answer), and the answer comes whole.
func TestRealDrainWithRequestInFlight(t *testing.T) {
	_, exe := realServer(t)
	fx := testutil.NeedRealLlama64K(t)
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	cfg, ports := realConfig(t, dir, exe, "drain_timeout = \"60s\"\nstop_timeout = \"120s\"",
		map[string]string{"a": fmt.Sprintf("model = %q\nctx_size = 8192", fx.Model64K)})
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg})
	e.waitReady(t, "a")
	type answer struct {
		code      int
		predicted float64
		at        time.Time
	}
	done := make(chan answer, 1)
	go func() {
		code, m := post(t, fmt.Sprintf("http://127.0.0.1:%d/completion", ports["a"]), "", `{"prompt":"Tell me","n_predict":3000,"seed":42,"ignore_eos":true,"grammar":"root ::= [a-z ]*"}`)
		p, _ := m["tokens_predicted"].(float64)
		done <- answer{code, p, time.Now()}
	}()
	waitFor(t, "the request in flight", 20*time.Second, func() bool {
		return strings.Contains(readFile(t, filepath.Join(dir, "logs", "llama-server-a.log")), "processing task")
	})
	r := control(t, app, "stop", "a")
	stopped := time.Now()
	if r.code != 0 {
		t.Fatalf("stop: %s", r)
	}
	a := <-done
	if a.code != 200 || a.predicted != 3000 {
		t.Errorf("the request in flight: %d with %v tokens, want 200 with 3000", a.code, a.predicted)
	}
	if a.at.After(stopped) {
		t.Errorf("stop answered before the request finished")
	}
	e.waitOutput(t, `a: waited [0-9.]+s for its busy slot\(s\) to finish`, 5*time.Second)
	if strings.Contains(e.out.String(), "SIGKILL") {
		t.Errorf("killed:\n%s", e.out.String())
	}
	stopEntry(t, e)
}
