package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ctl "github.com/llamaboot/llamaboot/internal/control"
	"github.com/llamaboot/llamaboot/internal/models"
)

// heldModelServer serves one model: the first request gets half and then
// waits for release; later ones get it whole. Other paths are 404.
type heldModelServer struct {
	*httptest.Server
	release chan struct{}
	mu      sync.Mutex
	hits    int
	auth    []string
}

func newHeldModelServer(t *testing.T, path string, body []byte) *heldModelServer {
	s := &heldModelServer{release: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path {
			http.NotFound(w, r)
			return
		}
		s.mu.Lock()
		s.hits++
		first := s.hits == 1
		s.auth = append(s.auth, r.Header.Get("Authorization"))
		s.mu.Unlock()
		w.Header().Set("ETag", `"held"`)
		if first {
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			w.Write(body[:len(body)/2])
			w.(http.Flusher).Flush()
			select {
			case <-s.release:
			case <-r.Context().Done():
				return
			}
			w.Write(body[len(body)/2:])
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	t.Cleanup(s.Close)
	return s
}

type statusWithDownloads struct {
	Instances []ctl.InstanceStatus `json:"instances"`
	Downloads []models.Download    `json:"downloads"`
}

func downloadStatus(t *testing.T, app string) statusWithDownloads {
	t.Helper()
	r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "status", "--json")
	var st statusWithDownloads
	json.Unmarshal([]byte(r.stdout), &st)
	return st
}

func stateOf(st statusWithDownloads, name string) ctl.InstanceStatus {
	for _, in := range st.Instances {
		if in.Name == name {
			return in
		}
	}
	return ctl.InstanceStatus{}
}

// TestEntryDownloadsModels: instances wait for their model in state
// downloading (progress in status) while the others start; a model that
// cannot be fetched fails its instance only; the shared model is fetched
// once, with the token, which is never printed; the readiness timeout
// starts after the download; a second boot needs no server.
func TestEntryDownloadsModels(t *testing.T) {
	dir := t.TempDir()
	app, modelsDir := filepath.Join(dir, "app"), filepath.Join(dir, "models")
	model := ggufBody(600_000, 4)
	srv := newHeldModelServer(t, "/repo/shared.gguf", model)
	ports := freePorts(t, 4)
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf(`
[master]
llama_cpp_path = %q
[models.shared]
url = "%s/repo/shared.gguf"
sha256 = "%s"
[instance.control]
log_dir = %q
ready_timeout = "1s"
[instance.server]
host = "127.0.0.1"
[instance.a.server]
port = %d
model = "models.shared"
[instance.b.server]
port = %d
model = "models.shared"
[instance.c.server]
port = %d
model = "%s/repo/missing.gguf"
[instance.d.server]
port = %d
`, standin, srv.URL, sha(model), filepath.Join(dir, "logs"), ports[0], ports[1], ports[2], srv.URL, ports[3]))
	env := []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg,
		"AUTO_INFER_MODELS_DIR=" + modelsDir, "AUTO_INFER_MODEL_TOKEN=tok_SECRET", "STANDIN_LOAD_MS=50"}
	e := startEntry(t, app, env)

	var st statusWithDownloads
	waitFor(t, "a and b downloading half the model, c failed, d ready", 30*time.Second, func() bool {
		st = downloadStatus(t, app)
		return stateOf(st, "a").State == "downloading" && stateOf(st, "b").State == "downloading" &&
			stateOf(st, "c").State == "failed" && stateOf(st, "d").State == "ready" &&
			len(st.Downloads) == 2 && st.Downloads[0].DoneBytes == int64(len(model)/2)
	})
	if d := st.Downloads[0]; d.State != "downloading" || d.Total != int64(len(model)) || d.Rate <= 0 || strings.Join(d.Instances, ",") != "a,b" ||
		d.File != filepath.Join(modelsDir, "shared.gguf") {
		t.Errorf("download status: %+v", d)
	}
	if c := stateOf(st, "c"); !strings.Contains(c.Error, "HTTP 404") || c.PID != 0 {
		t.Errorf("c: %+v", c)
	}
	// Hold the download past the readiness timeout: it must not count.
	held := time.Now()
	waitFor(t, "the download held past ready_timeout", 10*time.Second, func() bool {
		return time.Since(held) > 2*time.Second && stateOf(downloadStatus(t, app), "a").State == "downloading"
	})
	if r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "status"); !strings.Contains(r.stdout, "model downloads:") ||
		!strings.Contains(r.stdout, "downloading "+filepath.Join(modelsDir, "shared.gguf")+": 50% (") {
		t.Errorf("status text:\n%s", r.stdout)
	}
	close(srv.release)
	e.waitOutput(t, `a ready after`, 20*time.Second)
	e.waitOutput(t, `b ready after`, 20*time.Second)
	srv.mu.Lock()
	if srv.hits != 1 || srv.auth[0] != "Bearer tok_SECRET" {
		t.Errorf("shared model requested %d times, auth %q", srv.hits, srv.auth)
	}
	srv.mu.Unlock()
	log := readStandinLog(t, filepath.Join(dir, "logs", "llama-server-a.log"))
	if !strings.Contains(strings.Join(log.argv, " "), "--model "+filepath.Join(modelsDir, "shared.gguf")) {
		t.Errorf("a's argv: %q", log.argv)
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	e.wait(t, 15*time.Second)
	if strings.Contains(e.out.String(), "tok_SECRET") {
		t.Error("the token was printed")
	}

	// Second boot, the server gone: the models are used as they are.
	srv.Close()
	e = startEntry(t, app, env)
	e.waitOutput(t, `a ready after`, 20*time.Second)
	e.waitOutput(t, `server not contacted`, 5*time.Second)
	e.cmd.Process.Signal(syscall.SIGTERM)
	e.wait(t, 15*time.Second)

	// STRICT: the failed model (the server is gone: exit 1) is fatal,
	// nothing starts.
	e = startEntry(t, app, append(env, "AUTO_INFER_LLAMA_CPP_STRICT=1"), "--retries", "0", "--", "sleep", "100")
	if code := e.wait(t, 30*time.Second); code != 1 || !strings.Contains(e.out.String(), "instance c: model "+srv.URL+"/repo/missing.gguf") ||
		strings.Contains(e.out.String(), "ready after") || strings.Contains(e.out.String(), "started sleep") {
		t.Errorf("strict: exit %d\n%s", code, e.out.String())
	}
}

// TestEntryStopsDuringModelDownload: docker stop does not wait for a model
// download; its part stays for the next boot.
func TestEntryStopsDuringModelDownload(t *testing.T) {
	dir := t.TempDir()
	app, modelsDir := filepath.Join(dir, "app"), filepath.Join(dir, "models")
	model := ggufBody(300_000, 5)
	srv := newHeldModelServer(t, "/m.gguf", model)
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[master]\nllama_cpp_path = %q\n[instance.a.server]\nport = %d\nmodel = %q\n", standin, freePorts(t, 1)[0], srv.URL+"/m.gguf"))
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "AUTO_INFER_MODELS_DIR=" + modelsDir}, "--stall-timeout", "1h")
	part := filepath.Join(modelsDir, "m.gguf.part")
	waitFor(t, "half the model in "+part, 30*time.Second, func() bool { return partSize(part) == int64(len(model)/2) })
	e.cmd.Process.Signal(syscall.SIGTERM)
	if code := e.wait(t, 15*time.Second); code != 0 {
		t.Errorf("exit %d\n%s", code, e.out.String())
	}
	if partSize(part) != int64(len(model)/2) || !strings.Contains(e.out.String(), "kept in "+part) {
		t.Errorf("the part was not kept:\n%s", e.out.String())
	}
}
