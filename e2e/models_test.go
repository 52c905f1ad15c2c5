package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestModelDownloadedAndServed: a container downloads a generated model
// from a loopback server (token sent, never printed), checks its pin, and
// serves it with the stand-in, which gets the local path; a second
// container on the same volume, with the server gone, uses it offline.
func TestModelDownloadedAndServed(t *testing.T) {
	needDocker(t)
	model := []byte("GGUF")
	for i := 0; len(model) < 3<<20; i++ {
		model = append(model, byte(i*31))
	}
	sum := sha256.Sum256(model)
	var mu sync.Mutex
	var auth []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("ETag", `"m1"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(model))
	}))
	defer srv.Close()
	ports := freePorts(t, 1)
	cfgDir := t.TempDir()
	cfg := fmt.Sprintf("[instance.a.server]\nhost = \"127.0.0.1\"\nport = %d\nmodel = %q\nmodel_sha256 = %q\n", ports[0], srv.URL+"/org/m.gguf", hex.EncodeToString(sum[:]))
	if err := os.WriteFile(filepath.Join(cfgDir, "cfg.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	pkgs := t.TempDir()
	makePackage(t, pkgs, "pkg.tar.gz", "b7103", "")
	vol := volume(t)
	args := []string{"--network", "host", "-v", vol + ":/soft/app", "-v", pkgs + ":/pkg:ro", "-v", cfgDir + ":/config:ro",
		"-e", "AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT=1", "-e", "AUTO_INFER_LLAMA_CPP_PKG_PATH=/pkg/pkg.tar.gz",
		"-e", "AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "-e", "AUTO_INFER_LLAMA_CPP_CONFIG=/config/cfg.toml",
		"-e", "AUTO_INFER_MODEL_TOKEN=tok_E2E_SECRET", "-e", "STANDIN_LOAD_MS=100", testImage}
	c := start(t, args...)
	l := waitLogs(t, c, "a ready after", 60*time.Second)
	if !healthy(ports[0]) {
		t.Error("/health is not 200")
	}
	st := docker(t, "exec", c, "llamaboot", "status", "--json")
	if !strings.Contains(st, `"file": "/soft/app/models/m.gguf"`) || !strings.Contains(st, `"state": "done"`) {
		t.Errorf("status:\n%s", st)
	}
	if !strings.Contains(l, "downloaded model /soft/app/models/m.gguf (3.0 MiB") {
		t.Errorf("log:\n%s", l)
	}
	// The stand-in records its argv: llama-server got the local path.
	if argv := docker(t, "exec", c, "cat", "/tmp/llama-server-a.log"); !strings.Contains(argv, `"--model","/soft/app/models/m.gguf"`) &&
		!strings.Contains(argv, "--model /soft/app/models/m.gguf") {
		t.Errorf("stand-in log:\n%s", argv)
	}
	mu.Lock()
	if len(auth) != 1 || auth[0] != "Bearer tok_E2E_SECRET" {
		t.Errorf("requests' Authorization: %q", auth)
	}
	mu.Unlock()
	_, code, l := dockerStop(t, c)
	if code != "0" || strings.Contains(l, "tok_E2E_SECRET") {
		t.Errorf("exit %s; token printed: %v", code, strings.Contains(l, "tok_E2E_SECRET"))
	}

	srv.Close() // a second container, offline
	c = start(t, args...)
	l = waitLogs(t, c, "a ready after", 60*time.Second)
	if !strings.Contains(l, "server not contacted") {
		t.Errorf("second container log:\n%s", l)
	}
	dockerStop(t, c)
}
