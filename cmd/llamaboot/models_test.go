package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func ggufBody(n int, seed byte) []byte {
	b := []byte("GGUF")
	for i := 4; i < n; i++ {
		b = append(b, byte(i*13)^seed)
	}
	return b
}

func sha(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

// cutOnceServer serves body at any path; the first request of each path is
// cut after half, later ones resume with Range. It records each request.
type cutOnceServer struct {
	*httptest.Server
	mu    sync.Mutex
	seen  map[string]int
	reqs  []string // "path range authorization"
	bodyF func(path string) []byte
}

func newCutOnceServer(t *testing.T, bodyF func(string) []byte) *cutOnceServer {
	s := &cutOnceServer{seen: map[string]int{}, bodyF: bodyF}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := s.bodyF(r.URL.Path)
		s.mu.Lock()
		s.seen[r.URL.Path]++
		first := s.seen[r.URL.Path] == 1
		s.reqs = append(s.reqs, r.URL.Path+" "+r.Header.Get("Range")+" "+r.Header.Get("Authorization"))
		s.mu.Unlock()
		if body == nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", `"`+sha(body)[:12]+`"`)
		if first {
			cutAfterHalf(w, body)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *cutOnceServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.reqs...)
}

// TestFetchModels: resume after a cut, the token only to the model host and
// never printed, then an offline second run; a wrong pin exits 2 and
// leaves no file.
func TestFetchModels(t *testing.T) {
	dir := t.TempDir()
	model := ggufBody(400_000, 1)
	srv := newCutOnceServer(t, func(p string) []byte {
		if p == "/repo/m.gguf" {
			return model
		}
		return nil
	})
	models := filepath.Join(dir, "models")
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf(`
[instance.a.control]
model_sha256 = "%s"
[instance.a.server]
model = "%s/repo/m.gguf?sig=SIGSECRET"
`, sha(model), srv.URL))
	env := []string{"AUTO_INFER_MODELS_DIR=" + models, "AUTO_INFER_MODEL_TOKEN=tok_SECRET", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg}
	r := runLB(t, env, "fetch-models", "--retry-delay", "10ms")
	if r.code != 0 {
		t.Fatal(r)
	}
	got, _ := os.ReadFile(filepath.Join(models, "m.gguf"))
	if !bytes.Equal(got, model) {
		t.Fatal("wrong model content")
	}
	reqs := srv.requests()
	if len(reqs) != 2 || reqs[1] != fmt.Sprintf("/repo/m.gguf bytes=%d- Bearer tok_SECRET", len(model)/2) {
		t.Errorf("want a cut then a resume with the token: %q", reqs)
	}
	if got := dirNames(t, models); strings.Join(got, " ") != ".m.gguf.llamaboot.json m.gguf" {
		t.Errorf("models dir holds %q, want the model and its marker only (one lock, removed when the download ended)", got)
	}
	marker, _ := os.ReadFile(filepath.Join(models, ".m.gguf.llamaboot.json"))
	for _, secret := range []string{"tok_SECRET", "SIGSECRET"} {
		if strings.Contains(r.stdout+r.stderr+string(marker), secret) {
			t.Errorf("%s printed or stored:\n%v\n%s", secret, r, marker)
		}
	}
	if !strings.Contains(r.stdout, "[models] downloaded model "+filepath.Join(models, "m.gguf")) {
		t.Errorf("output: %v", r)
	}
	// The plan passes llama-server the local path.
	if r := runLB(t, env, "plan", "--json"); !strings.Contains(r.stdout, `"--model",`+"\n"+`            "`+filepath.Join(models, "m.gguf")+`"`) {
		t.Errorf("plan: %v", r)
	}

	srv.Close()
	r = runLB(t, env, "fetch-models")
	if r.code != 0 || !strings.Contains(r.stdout, "server not contacted") {
		t.Errorf("offline second run: %v", r)
	}

	// A wrong pin: exit 2, nothing left.
	bad := newCutOnceServer(t, func(string) []byte { return ggufBody(1000, 2) })
	cfg2 := writeFile(t, filepath.Join(dir, "bad.toml"), fmt.Sprintf("[instance.b.server]\nmodel = %q\nmodel_sha256 = %q\n", bad.URL+"/x.gguf", strings.Repeat("0", 64)))
	r = runLB(t, []string{"AUTO_INFER_MODELS_DIR=" + models}, "fetch-models", "--config", cfg2, "--retry-delay", "10ms")
	if r.code != 2 || !strings.Contains(r.stderr, "instance b: model "+bad.URL+"/x.gguf: ") || !strings.Contains(r.stderr, "checksum mismatch") {
		t.Errorf("wrong pin: %v", r)
	}
	for _, p := range []string{"x.gguf", "x.gguf.part", ".x.gguf.llamaboot.json"} {
		if _, err := os.Stat(filepath.Join(models, p)); err == nil {
			t.Errorf("%s left behind", p)
		}
	}
	noLocks(t, models)
}

// TestFetchModelsDiskFull: a model larger than the free space is refused
// before the download (exit 1, the variable to change named).
func TestFetchModelsDiskFull(t *testing.T) {
	dir := t.TempDir()
	models := filepath.Join(dir, "models")
	os.Mkdir(models, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", models).CombinedOutput(); err != nil {
		t.Skipf("mounting a tmpfs needs root: %v %s", err, out)
	}
	defer exec.Command("umount", models).Run()
	big := ggufBody(2<<20, 3)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(big))
	}))
	defer srv.Close()
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[instance.a.server]\nmodel = %q\n", srv.URL+"/big.gguf"))
	r := runLB(t, []string{"AUTO_INFER_MODELS_DIR=" + models}, "fetch-models", "--config", cfg)
	if r.code != 1 || !strings.Contains(r.stderr, "needs 2.0 MiB more but the file system holding "+models+" has ") ||
		!strings.Contains(r.stderr, "AUTO_INFER_MODELS_DIR") {
		t.Errorf("disk full: %v", r)
	}
}
