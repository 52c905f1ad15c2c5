package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A link planted at an instance's predictable log path is refused: run
// says which file and why, and the file the link names is unchanged.
func TestRunRefusesPlantedLogLink(t *testing.T) {
	dir := t.TempDir()
	sentinel := writeFile(t, filepath.Join(dir, "sentinel"), "keep me\n")
	os.Chmod(sentinel, 0o600)
	logPath := filepath.Join(dir, "logs", "llama-server-a.log")
	os.MkdirAll(filepath.Dir(logPath), 0o755)
	if err := os.Symlink(sentinel, logPath); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[master]\nllama_cpp_path = %q\n[instance.control]\nlog_dir = %q\n[instance.a.server]\nport = %d\n",
		standin, filepath.Dir(logPath), freePorts(t, 1)[0]))
	r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + dir}, "run", "--config", cfg)
	if r.code == 0 || !strings.Contains(r.stderr, "log file "+logPath+" is a symbolic link") || strings.Contains(r.stdout, "started a") {
		t.Errorf("want a refusal naming %s and nothing started:\n%v", logPath, r)
	}
	b, _ := os.ReadFile(sentinel)
	fi, _ := os.Stat(sentinel)
	if string(b) != "keep me\n" || fi.Mode().Perm() != 0o600 {
		t.Errorf("sentinel changed: %q %v", b, fi.Mode().Perm())
	}
}

// Two instances left on the default port: the error points at the second
// instance's own table, not at line 1.
func TestDuplicateDefaultPortPointsAtInstance(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), "[instance.server]\nctx_size = 4096\n\n[instance.a.server]\nalias = \"a\"\n\n[instance.b.server]\nalias = \"b\"\n")
	r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + dir}, "plan", "--config", cfg)
	want := cfg + `:7: instance.b.server.port: port 8080 (no port set: 8080 is the default) is also used by instance "a"`
	if r.code != 2 || !strings.Contains(r.stderr, want) {
		t.Errorf("want exit 2 and %q:\n%v", want, r)
	}
}
