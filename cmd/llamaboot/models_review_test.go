package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/testutil"
)

// TestFetchModelsRefusesBadPlaces: a relative path that leaves the models
// dir and a split with 0 or too many parts are refused at their line
// (exit 2), and nothing is written anywhere.
func TestFetchModelsRefusesBadPlaces(t *testing.T) {
	dir := t.TempDir()
	models := filepath.Join(dir, "app", "models")
	for _, c := range []struct{ table, want string }{
		{"url = \"http://127.0.0.1:1/m.gguf\"\npath = \"../../outside/evil.gguf\"", `cfg.toml:3: models.m.path: "../../outside/evil.gguf" leaves the models dir`},
		{"url = \"http://127.0.0.1:1/m-00001-of-00000.gguf\"", `cfg.toml:2: models.m.url: http://127.0.0.1:1/m-00001-of-00000.gguf says it is one of 0 parts`},
		{"url = \"http://127.0.0.1:1/m-00001-of-99999.gguf\"", `cfg.toml:2: models.m.url: http://127.0.0.1:1/m-00001-of-99999.gguf says it is one of 99999 parts`},
	} {
		cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[models.m]\n%s\n[instance.a.server]\nport = 1\nmodel = \"models.m\"\n", c.table))
		r := runLB(t, []string{"AUTO_INFER_MODELS_DIR=" + models}, "fetch-models", "--config", cfg)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: want exit 2 and %q: %v", c.table, c.want, r)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("files written beside the config: %v", ents)
	}
}

// gatedServer serves files by path (ETag, Range): each path's first
// request is cut after half; later ones wait for open. It counts requests.
type gatedServer struct {
	*httptest.Server
	open  chan struct{}
	mu    sync.Mutex
	hits  map[string]int
	held  int
	files map[string][]byte
}

func newGatedServer(t *testing.T, files map[string][]byte) *gatedServer {
	s := &gatedServer{open: make(chan struct{}), hits: map[string]int{}, files: files}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := s.files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		s.mu.Lock()
		s.hits[r.URL.String()]++
		first := s.hits[r.URL.String()] == 1
		if !first {
			s.held++
		}
		s.mu.Unlock()
		w.Header().Set("ETag", `"`+sha(body)[:12]+`"`)
		if first {
			cutAfterHalf(w, body)
			return
		}
		select {
		case <-s.open:
		case <-r.Context().Done():
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *gatedServer) count(f func() int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return f()
}

// TestConcurrentFetchModels: two fetch-models resuming the same .part
// files (one model pinned, one not) take turns: one downloads while the
// other waits, then finds the files in place; both exit 0, each file was
// fetched once (the cut and one resume) and is whole.
func TestConcurrentFetchModels(t *testing.T) {
	dir := t.TempDir()
	models := filepath.Join(dir, "models")
	pinned, loose := ggufBody(300_000, 7), ggufBody(200_000, 8)
	srv := newGatedServer(t, map[string][]byte{"/p.gguf": pinned, "/l.gguf": loose})
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf(`
[models.p]
url = "%s/p.gguf"
sha256 = "%s"
[models.l]
url = "%s/l.gguf"
[instance.a.server]
port = 1
model = "models.p"
[instance.b.server]
port = 2
model = "models.l"
`, srv.URL, sha(pinned), srv.URL))
	env := []string{"AUTO_INFER_MODELS_DIR=" + models}
	if r := runLB(t, env, "fetch-models", "--config", cfg, "--retries", "0"); r.code != 1 {
		t.Fatalf("the cut run should fail and keep its parts: %v", r)
	}
	noLocks(t, models) // a failed download leaves its part, not its lock
	for _, p := range []string{"p.gguf.part", "l.gguf.part"} {
		if _, err := os.Stat(filepath.Join(models, p)); err != nil {
			t.Fatalf("no part to resume: %v", err)
		}
	}
	type run struct {
		cmd *exec.Cmd
		out *testutil.SyncBuffer
	}
	var runs []run
	for range 2 {
		r := run{cmd: exec.Command(llamaboot, "fetch-models", "--config", cfg, "--retries", "0"), out: &testutil.SyncBuffer{}}
		r.cmd.Env = cleanEnv(env...)
		r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.cmd.Process.Kill() })
		runs = append(runs, r)
	}
	all := func() string { return runs[0].out.String() + runs[1].out.String() }
	waitFor(t, "one fetcher resuming both files while the other waits", 30*time.Second, func() bool {
		return srv.count(func() int { return srv.held }) == 2 && strings.Count(all(), "another process is fetching model") == 2
	})
	close(srv.open)
	for i, r := range runs {
		if err := r.cmd.Wait(); err != nil {
			t.Errorf("fetcher %d: %v\n%s", i, err, r.out.String())
		}
	}
	for name, body := range map[string][]byte{"p.gguf": pinned, "l.gguf": loose} {
		got, _ := os.ReadFile(filepath.Join(models, name))
		if !bytes.Equal(got, body) {
			t.Errorf("%s: %d bytes, sha256 %s, want %s", name, len(got), sha(got), sha(body))
		}
	}
	if n := srv.count(func() int { return srv.hits["/p.gguf"] + srv.hits["/l.gguf"] }); n != 4 {
		t.Errorf("%d requests, want a cut and a resume per file:\n%s", n, all())
	}
	if strings.Count(all(), "server not contacted") != 2 {
		t.Errorf("the waiter should find both files in place:\n%s", all())
	}
	// Two fetchers took turns on one lock per model; none is left.
	if got := dirNames(t, models); strings.Join(got, " ") != ".l.gguf.llamaboot.json .p.gguf.llamaboot.json l.gguf p.gguf" {
		t.Errorf("models dir holds %q, want each model and its marker only", got)
	}
}

// dirNames lists dir, sorted.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// noLocks fails when a lock file is left in dir.
func noLocks(t *testing.T, dir string) {
	t.Helper()
	for _, n := range dirNames(t, dir) {
		if strings.HasSuffix(n, ".lock") {
			t.Errorf("lock file %s left in %s", n, dir)
		}
	}
}

// TestModelPathNotARegularFile: a FIFO (or a link, or a FIFO at the
// marker) where a model goes is refused with what to do, without blocking:
// fetch-models exits 2, and under entry the instance fails with the reason
// while SIGTERM still ends entry.
func TestModelPathNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	models := filepath.Join(dir, "models")
	body := ggufBody(10_000, 9)
	srv := newGatedServer(t, map[string][]byte{"/m.gguf": body})
	close(srv.open)
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[master]\nllama_cpp_path = %q\n[instance.a.server]\nport = %d\nmodel = %q\nmodel_sha256 = %q\n",
		standin, freePorts(t, 1)[0], srv.URL+"/m.gguf", sha(body)))
	env := []string{"AUTO_INFER_MODELS_DIR=" + models}
	os.MkdirAll(models, 0o755)
	for _, c := range []struct {
		plant func() error
		want  string
	}{
		{func() error { return syscall.Mkfifo(filepath.Join(models, "m.gguf"), 0o666) }, filepath.Join(models, "m.gguf") + " is a FIFO, not a model file; remove it"},
		{func() error { return os.Symlink("/etc/passwd", filepath.Join(models, "m.gguf")) }, filepath.Join(models, "m.gguf") + " is a symbolic link"},
		{func() error {
			os.WriteFile(filepath.Join(models, "m.gguf"), body, 0o644)
			return syscall.Mkfifo(filepath.Join(models, ".m.gguf.llamaboot.json"), 0o666)
		}, filepath.Join(models, ".m.gguf.llamaboot.json") + " is a FIFO, not a model file; remove it"},
	} {
		os.RemoveAll(models)
		os.MkdirAll(models, 0o755)
		if err := c.plant(); err != nil {
			t.Fatal(err)
		}
		r := runLB(t, env, "fetch-models", "--config", cfg)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("want exit 2 and %q: %v", c.want, r)
		}
	}

	os.RemoveAll(models)
	os.MkdirAll(models, 0o755)
	syscall.Mkfifo(filepath.Join(models, "m.gguf"), 0o666)
	app := filepath.Join(dir, "app")
	e := startEntry(t, app, append(env, "AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG="+cfg))
	waitFor(t, "a failed on the FIFO", 30*time.Second, func() bool {
		a := stateOf(downloadStatus(t, app), "a")
		return a.State == "failed" && strings.Contains(a.Error, "is a FIFO, not a model file; remove it")
	})
	e.cmd.Process.Signal(syscall.SIGTERM)
	if code := e.wait(t, 15*time.Second); code != 0 {
		t.Errorf("exit %d\n%s", code, e.out.String())
	}
}

// TestModelURLQueryIsPartOfTheFile: an unpinned model whose URL changes
// only in its query (?v=1 → ?v=2) is downloaded again; the marker keeps a
// hash of the URL, never the URL's secrets.
func TestModelURLQueryIsPartOfTheFile(t *testing.T) {
	dir := t.TempDir()
	models := filepath.Join(dir, "models")
	body := ggufBody(10_000, 10)
	srv := newGatedServer(t, map[string][]byte{"/m.gguf": body})
	close(srv.open)
	env := []string{"AUTO_INFER_MODELS_DIR=" + models}
	for i, q := range []string{"v=1&sig=SIGSECRET", "v=1&sig=SIGSECRET", "v=2&sig=SIGSECRET"} {
		cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[instance.a.server]\nport = 1\nmodel = %q\n", srv.URL+"/m.gguf?"+q))
		r := runLB(t, env, "fetch-models", "--config", cfg, "--retry-delay", "10ms")
		want := "downloaded model"
		if i == 1 {
			want = "server not contacted"
		}
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("run %d (?%s): want %q: %v", i, q, want, r)
		}
	}
	if n := srv.count(func() int { return srv.hits["/m.gguf?v=2&sig=SIGSECRET"] }); n == 0 {
		t.Error("?v=2 was never requested")
	}
	marker, _ := os.ReadFile(filepath.Join(models, ".m.gguf.llamaboot.json"))
	if strings.Contains(string(marker), "SIGSECRET") || !strings.Contains(string(marker), `"url_sha256"`) {
		t.Errorf("marker: %s", marker)
	}
}

// cutAfterHalf announces body whole, sends half and drops the connection.
func cutAfterHalf(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.Write(body[:len(body)/2])
	w.(http.Flusher).Flush()
	conn, _, _ := w.(http.Hijacker).Hijack()
	conn.Close()
}

// lineOf is the 1-based line of the first line of text holding s.
func lineOf(t *testing.T, text, s string) int {
	t.Helper()
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			return i + 1
		}
	}
	t.Fatalf("%q not in\n%s", s, text)
	return 0
}

// TestReloadWhileDownloading: a reload while instances wait for their
// models says what it does to them and does it: a changed one starts with
// the new settings once its model is there, a removed one never starts
// (its download cancelled).
func TestReloadWhileDownloading(t *testing.T) {
	dir := t.TempDir()
	app, modelsDir, logs := filepath.Join(dir, "app"), filepath.Join(dir, "models"), filepath.Join(dir, "logs")
	ma, mr := ggufBody(100_000, 11), ggufBody(100_000, 12)
	srv := newGatedServer(t, map[string][]byte{"/a.gguf": ma, "/r.gguf": mr})
	ports := freePorts(t, 2)
	head := fmt.Sprintf("[master]\nllama_cpp_path = %q\n[instance.control]\nlog_dir = %q\n[instance.a.server]\nhost = \"127.0.0.1\"\nport = %d\nmodel = %q\n",
		standin, logs, ports[0], srv.URL+"/a.gguf")
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), head+fmt.Sprintf("[instance.r.server]\nport = %d\nmodel = %q\n", ports[1], srv.URL+"/r.gguf"))
	env := []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "AUTO_INFER_MODELS_DIR=" + modelsDir, "AUTO_INFER_APP_DIR=" + app, "STANDIN_LOAD_MS=50"}
	e := startEntry(t, app, env, "--retry-delay", "10ms")
	waitFor(t, "a and r downloading, both resumes held", 30*time.Second, func() bool {
		st := downloadStatus(t, app)
		return stateOf(st, "a").State == "downloading" && stateOf(st, "r").State == "downloading" && srv.count(func() int { return srv.held }) == 2
	})

	writeFile(t, cfg, strings.Replace(head, "host = \"127.0.0.1\"\n", "host = \"127.0.0.1\"\napi_key = \"k3y\"\n", 1))
	r := runLB(t, env, "reload", "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, "~ a: still downloading its model: would start with the new settings once it is there: api_key added") ||
		!strings.Contains(r.stdout, "- r: was waiting for its model: would be removed, never started") {
		t.Errorf("dry run: %v", r)
	}
	r = runLB(t, env, "reload")
	if r.code != 0 || !strings.Contains(r.stdout, "~ a: still downloading its model: starts with the new settings once it is there: api_key added") ||
		!strings.Contains(r.stdout, "- r: was waiting for its model: removed, never started") {
		t.Errorf("reload: %v", r)
	}
	e.waitOutput(t, `reload \(llamaboot reload\) of .*: 0 added, 0 changed, 0 removed, 0 unchanged, 2 waiting for their models`, 10*time.Second)
	if r := runLB(t, env, "reload", "--dry-run"); !strings.Contains(r.stdout, "= a: unchanged (downloading its model)") || strings.Contains(r.stdout, " r:") {
		t.Errorf("dry run after the reload: %v", r)
	}
	var st statusWithDownloads
	waitFor(t, "r's download cancelled and r gone", 30*time.Second, func() bool {
		st = downloadStatus(t, app)
		for _, d := range st.Downloads {
			if d.File == filepath.Join(modelsDir, "r.gguf") {
				return d.State == "cancelled" && stateOf(st, "r").Name == ""
			}
		}
		return false
	})
	close(srv.open)
	e.waitOutput(t, `a ready after`, 30*time.Second)
	if argv := strings.Join(readStandinLog(t, filepath.Join(logs, "llama-server-a.log")).argv, " "); !strings.Contains(argv, "--api-key k3y") {
		t.Errorf("a started without the reloaded settings: %s", argv)
	}
	// A later reload owns a: removing it from the config stops it.
	writeFile(t, cfg, fmt.Sprintf("[master]\nllama_cpp_path = %q\n[instance.z.server]\nhost = \"127.0.0.1\"\nport = %d\n", standin, ports[1]))
	if r := runLB(t, env, "reload"); r.code != 0 || !strings.Contains(r.stdout, "- a: stopped and removed") {
		t.Errorf("removing a after its download: %v", r)
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	e.wait(t, 15*time.Second)
	if _, err := os.Stat(filepath.Join(logs, "llama-server-r.log")); err == nil || strings.Contains(e.out.String(), "r ready") {
		t.Errorf("the removed r started:\n%s", e.out.String())
	}
}

// TestReloadNeverStartsOnAnUnvouchedModel: a reload that changes a model's
// URL and pin, or adds an instance whose model is not downloaded, is
// refused at the model keys' lines (exit 2, nothing changes); once
// fetch-models has fetched them the same reload applies, on the new file.
func TestReloadNeverStartsOnAnUnvouchedModel(t *testing.T) {
	dir := t.TempDir()
	app, modelsDir, logs := filepath.Join(dir, "app"), filepath.Join(dir, "models"), filepath.Join(dir, "logs")
	v1, v2, mc := ggufBody(50_000, 13), ggufBody(60_000, 14), ggufBody(40_000, 15)
	srv := newGatedServer(t, map[string][]byte{"/v1/m.gguf": v1, "/v2/m.gguf": v2, "/c.gguf": mc})
	close(srv.open)
	ports := freePorts(t, 2)
	base := fmt.Sprintf("[master]\nllama_cpp_path = %q\n[instance.control]\nlog_dir = %q\n[instance.server]\nhost = \"127.0.0.1\"\n[models.m]\nurl = %q\nsha256 = %q\n[instance.a.server]\nport = %d\nmodel = \"models.m\"\n",
		standin, logs, srv.URL+"/v1/m.gguf", sha(v1), ports[0])
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), base)
	env := []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "AUTO_INFER_MODELS_DIR=" + modelsDir, "AUTO_INFER_APP_DIR=" + app, "STANDIN_LOAD_MS=50"}
	e := startEntry(t, app, env, "--retry-delay", "10ms")
	pid := e.waitReady(t, "a")["a"].PID

	next := strings.Replace(strings.Replace(base, "/v1/m.gguf", "/v2/m.gguf", 1), sha(v1), sha(v2), 1) +
		fmt.Sprintf("[instance.c.server]\nport = %d\nmodel = %q\nmodel_sha256 = %q\n", ports[1], srv.URL+"/c.gguf", sha(mc))
	writeFile(t, cfg, next)
	r := runLB(t, env, "reload")
	for _, want := range []string{
		fmt.Sprintf("cfg.toml:%d: instance.a.server.model: %s was downloaded from another URL than %s (instance \"a\"): a reload does not download models; run llamaboot fetch-models, then reload again",
			lineOf(t, next, `model = "models.m"`), filepath.Join(modelsDir, "m.gguf"), srv.URL+"/v2/m.gguf"),
		fmt.Sprintf("cfg.toml:%d: instance.c.server.model: model %s is not downloaded yet to %s (instance \"c\")",
			lineOf(t, next, "/c.gguf"), srv.URL+"/c.gguf", filepath.Join(modelsDir, "c.gguf")),
		"nothing changed",
	} {
		if r.code != 2 || !strings.Contains(r.stderr, want) {
			t.Errorf("want exit 2 and %q: %v", want, r)
		}
	}
	if st := byName(e.status(t)); st["a"].PID != pid || st["c"].Name != "" {
		t.Errorf("the refused reload changed something: %+v", st)
	}

	// Only the pin changed (same URL): refused too.
	pinOnly := strings.Replace(base, sha(v1), sha(v2), 1)
	writeFile(t, cfg, pinOnly)
	if r := runLB(t, env, "reload"); r.code != 2 || !strings.Contains(r.stderr, "is not known to match the pinned sha256 "+sha(v2)[:12]) {
		t.Errorf("a new pin on the old file: %v", r)
	}

	writeFile(t, cfg, next)
	if r := runLB(t, env, "fetch-models"); r.code != 0 {
		t.Fatal(r)
	}
	if r := runLB(t, env, "reload"); r.code != 0 || !strings.Contains(r.stdout, "~ a: restarted") || !strings.Contains(r.stdout, "+ c: started") {
		t.Errorf("reload after fetch-models: %v", r)
	}
	e.waitReady(t, "a", "c")
	if got, _ := os.ReadFile(filepath.Join(modelsDir, "m.gguf")); sha(got) != sha(v2) {
		t.Errorf("a runs on %s, want the new pin %s", sha(got), sha(v2))
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	e.wait(t, 15*time.Second)
}
