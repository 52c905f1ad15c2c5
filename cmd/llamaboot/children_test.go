package main

import (
	"bytes"
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

// scriptServer writes a llama-server stand-in script in an open dir: its
// --help prints flags (and records the uid asking), a run records its
// environment.
func scriptServer(t *testing.T, dir string) string {
	t.Helper()
	exe := filepath.Join(dir, "llama-server")
	script := fmt.Sprintf(`#!/bin/sh
if [ "$1" = --help ]; then
  id -u >> %[1]s/help-uids
  printf -- '--port PORT                 port to listen\n--metrics                   enable metrics\n--alias STRING              model alias\n'
  exit 0
fi
env > %[1]s/env.tmp && mv %[1]s/env.tmp %[1]s/env
exec sleep 30
`, dir)
	if err := os.WriteFile(exe, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return exe
}

// TestPlanAsksFlagsAsNobody: plan (root) ran the bundle's or a config's
// llama-server --help as root; it runs as nobody now, and the answer
// type-checks the config: a string on a switch (metrics = "--api-key-file"
// once passed that flag) and true on a flag that needs a value are refused
// with exit 2, with or without STRICT.
func TestPlanAsksFlagsAsNobody(t *testing.T) {
	dir := openDir(t)
	os.Chmod(dir, 0o777)
	exe := scriptServer(t, dir)
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[master]\nllama_cpp_path = %q\n[instance.a.server]\nport = 8080\nmetrics = true\n", exe))
	app := filepath.Join(dir, "app")
	if r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "plan", "--config", cfg); r.code != 0 {
		t.Fatalf("plan: %v", r)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "help-uids")); strings.TrimSpace(string(b)) != "65534" {
		t.Errorf("--help ran as uid %q, want only 65534", b)
	}
	for _, c := range []struct{ keys, want string }{
		{`metrics = "--api-key-file"`, `bad.toml:5: instance.a.server.metrics: --metrics is a switch (it takes no value): give true or false, not the string "--api-key-file"`},
		{`alias = true`, `bad.toml:5: instance.a.server.alias: --alias takes a value`},
		{`"" = "x"`, `bad.toml:5: instance.a.server.: is not a flag name ("" would be passed as "--")`},
	} {
		cfg := writeFile(t, filepath.Join(dir, "bad.toml"), fmt.Sprintf("[master]\nllama_cpp_path = %q\n[instance.a.server]\nport = 8080\n%s\n", exe, c.keys))
		for _, strict := range []string{"0", "1"} {
			r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app, "AUTO_INFER_LLAMA_CPP_STRICT=" + strict}, "plan", "--config", cfg)
			if r.code != 2 || !strings.Contains(r.stderr, c.want) {
				t.Errorf("%s (STRICT=%s): want exit 2 and %q: %v", c.keys, strict, c.want, r)
			}
		}
	}
}

// TestServersGetNoCredentials: the package URL with its userinfo and signed
// query, and the registry credentials, reached every llama-server's
// environment; the server sees the URL redacted and no credentials.
func TestServersGetNoCredentials(t *testing.T) {
	dir := openDir(t)
	os.Chmod(dir, 0o777)
	exe := scriptServer(t, dir)
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[master]\nllama_cpp_path = %q\n[instance.a.server]\nport = %d\n", exe, freePorts(t, 1)[0]))
	startEntry(t, filepath.Join(dir, "app"), []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg,
		"AUTO_INFER_LLAMA_CPP_PKG_PATH=https://ghp_USERSECRET@example.invalid/llama.tar.gz?X-Amz-Signature=SIGSECRET",
		"AUTO_INFER_REGISTRY_AUTH=user:PWSECRET", "AUTO_INFER_LLAMA_CPP_PKG_TOKEN=TOKSECRET", "AUTO_INFER_MODEL_TOKEN=MTOKSECRET"})
	var env string
	waitFor(t, "the server's environment", 20*time.Second, func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "env"))
		env = string(b)
		return err == nil
	})
	if strings.Contains(env, "SECRET") {
		t.Errorf("a server's environment holds credentials:\n%s", env)
	}
	if !strings.Contains(env, "AUTO_INFER_LLAMA_CPP_PKG_PATH=https://") {
		t.Errorf("the package URL, redacted, is gone:\n%s", env)
	}
}

// TestLongAppDirSocketNotSquatted: with an app dir too long for a socket
// address, root's socket went to $TMPDIR/llamaboot-0/, which any user
// could make first: entry then had no socket and healthcheck said 1 for
// ever. The socket stays in the app dir, bound through a descriptor of it.
func TestLongAppDirSocketNotSquatted(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test needs root (CI runs as root)")
	}
	dir := openDir(t)
	tmp := filepath.Join(dir, "tmp")
	os.Mkdir(tmp, 0o1777)
	os.Chmod(tmp, 0o777|os.ModeSticky)
	squat := filepath.Join(tmp, "llamaboot-0")
	os.Mkdir(squat, 0o777)
	os.Chown(squat, 1000, 1000)
	app := filepath.Join(dir, strings.Repeat("deep/", 20), "app")
	cfg, _ := watchConfig(t, dir, "", "", "a")
	env := []string{"TMPDIR=" + tmp, "AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=50"}
	e := startEntry(t, app, env)
	e.waitOutput(t, `a ready after`, 20*time.Second)
	r := runLB(t, []string{"TMPDIR=" + tmp, "AUTO_INFER_APP_DIR=" + app}, "healthcheck")
	if r.code != 0 || r.stdout != "ready: a\n" {
		t.Errorf("healthcheck with the temp dir's socket name squatted: %v\n%s", r, e.out.String())
	}
	if ents, _ := os.ReadDir(squat); len(ents) != 0 {
		t.Errorf("root used the squatted dir: %v", ents)
	}
}

// TestModelTokensScopedThroughTheBinary: a config with models on two hosts
// handed AUTO_INFER_MODEL_TOKEN to both; now neither gets it unless named
// in AUTO_INFER_MODEL_TOKEN_HOSTS (a warning says so), and a model's
// token_env goes to its own host only.
func TestModelTokensScopedThroughTheBinary(t *testing.T) {
	type seen struct {
		mu   sync.Mutex
		auth []string
	}
	serve := func(body []byte) (*httptest.Server, *seen) {
		s := &seen{}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.mu.Lock()
			s.auth = append(s.auth, r.Header.Get("Authorization"))
			s.mu.Unlock()
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
		}))
		t.Cleanup(srv.Close)
		return srv, s
	}
	a, sa := serve(ggufBody(3000, 1))
	b, sb := serve(ggufBody(3000, 2))
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[models.b]\nurl = %q\ntoken_env = \"B_TOKEN\"\n[instance.a.server]\nport = 1\nmodel = %q\n[instance.b.server]\nport = 2\nmodel = \"models.b\"\n",
		b.URL+"/b.gguf", a.URL+"/a.gguf"))
	r := runLB(t, []string{"AUTO_INFER_MODELS_DIR=" + filepath.Join(dir, "models"), "AUTO_INFER_MODEL_TOKEN=tok_GLOBAL", "B_TOKEN=tok_B"}, "fetch-models", "--config", cfg)
	if r.code != 0 || !strings.Contains(r.stderr, "AUTO_INFER_MODEL_TOKEN is sent to no model host") {
		t.Fatalf("fetch-models: %v", r)
	}
	if strings.Join(sa.auth, ",") != "" || strings.Join(sb.auth, ",") != "Bearer tok_B" {
		t.Errorf("host a got %q, host b got %q; want nothing and only b's own token", sa.auth, sb.auth)
	}
}
