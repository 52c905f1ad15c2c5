package main

import (
	"fmt"
	"os"
	"os/exec"
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

// headCommit is the checkout's commit, as `llamaboot version` should name it.
func headCommit(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout (%v): no commit to stamp", err)
	}
	return strings.TrimSpace(string(out))
}

// `go build` (Go's VCS stamp) and `make build` (link-time stamp) both name
// the commit.
func TestVersionNamesCommit(t *testing.T) {
	head := headCommit(t)
	// Go stamps only checkouts whose .git is a directory, not linked
	// worktrees (where .git is a file); make's stamp covers those.
	if fi, err := os.Stat("../../.git"); err == nil && fi.IsDir() {
		if r := runLB(t, nil, "version"); r.code != 0 || !strings.Contains(r.stdout, "(commit "+head) {
			t.Errorf("go build: want commit %s:\n%v", head, r)
		}
	} else {
		t.Log("linked worktree: Go records no VCS stamp here; checking make build only")
	}
	dir := t.TempDir()
	mk := exec.Command("make", "-s", "-C", "../..", "build", "BINDIR="+dir)
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	out, err := exec.Command(filepath.Join(dir, "llamaboot"), "version").Output()
	if err != nil || !strings.Contains(string(out), "(commit "+head) || strings.Contains(string(out), "llamaboot dev ") {
		t.Errorf("make build: want version and commit %s: %s %v", head, out, err)
	}
}

func TestConfigDirectoryAndMissingExecutable(t *testing.T) {
	dir := t.TempDir()
	cfgDir := filepath.Join(dir, "cfg.toml")
	os.Mkdir(cfgDir, 0o755) // what Docker makes for a -v of a missing host file
	r := runLB(t, nil, "plan", "--config", cfgDir)
	if r.code != 2 || !strings.Contains(r.stderr, "config "+cfgDir+" is a directory, not a file") || !strings.Contains(r.stderr, "host path of the mount") {
		t.Errorf("config dir:\n%v", r)
	}

	app := filepath.Join(dir, "app")
	cfg := writeFile(t, filepath.Join(dir, "ok.toml"), fmt.Sprintf("[instance.control]\nlog_dir = %q\n[instance.a.server]\nport = %d\n", dir, freePorts(t, 1)[0]))
	r = runLB(t, []string{"PATH=/nonexistent-bin"}, "run", "--app-dir", app, "--config", cfg)
	want := `executable llama-server not found: looked in ` + app + `/llama-cpp/bin, /hard/volume/workspace/llama-cpp/build/bin and PATH (/nonexistent-bin)`
	// The config's (or the install's) fault: bad input, exit 2, nothing started.
	if r.code != 2 || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "nothing was started") {
		t.Errorf("want exit 2 and %q:\n%v", want, r)
	}
}

// A misspelt server key is caught against the stand-in's --help: an error
// with a did-you-mean for plan, run and entry (exit 2, nothing started), as
// llama-server itself would refuse the flag; --help runs once per executable
// (cached in the app dir); a missing executable makes it a warning that the
// check was skipped.
func TestMisspeltServerKey(t *testing.T) {
	dir := openDir(t)
	os.Chmod(dir, 0o777) // --help runs as nobody and counts itself here
	app := filepath.Join(dir, "app")
	os.MkdirAll(app, 0o755)
	count := filepath.Join(dir, "help-runs")
	wrapper := writeFile(t, filepath.Join(dir, "bin", "llama-server"),
		fmt.Sprintf("#!/bin/sh\ncase \"$*\" in *--help*) echo x >> %s;; esac\nexec %s \"$@\"\n", count, standin))
	os.Chmod(wrapper, 0o755)
	port := freePorts(t, 1)[0]
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[master]\nllama_cpp_path = %q\n[instance.control]\nlog_dir = %q\n[instance.a.server]\nport = %d\nn_gpu_layer = 99\n", wrapper, dir, port))
	want := cfg + `:7: instance.a.server.n_gpu_layer: ` + wrapper + ` has no flag --n-gpu-layer (did you mean "n_gpu_layers"?)`
	env := []string{"AUTO_INFER_APP_DIR=" + app}

	for range 2 {
		if r := runLB(t, env, "plan", "--config", cfg); r.code != 2 || !strings.Contains(r.stderr, want) {
			t.Errorf("plan: want exit 2 and %q:\n%v", want, r)
		}
	}
	if b, _ := os.ReadFile(count); strings.Count(string(b), "x") != 1 {
		t.Errorf("--help ran %d times for two plans, want 1 (cached)", strings.Count(string(b), "x"))
	}
	if _, err := os.Stat(filepath.Join(app, ".llama-server-flags.json")); err != nil {
		t.Errorf("no cache in the app dir: %v", err)
	}
	r := runLB(t, env, "run", "--config", cfg)
	if r.code != 2 || !strings.Contains(r.stderr, want) || strings.Contains(r.stdout, "started a") || strings.Contains(r.stderr, "warning: "+want) {
		t.Errorf("run: want exit 2, nothing started, and the error %q:\n%v", want, r)
	}

	// entry (the container path) refuses the config: the instance is not
	// started (a crash loop avoided); STRICT stops the boot.
	entryEnv := append(env, "AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG="+cfg)
	if r := runLB(t, append(entryEnv, "AUTO_INFER_LLAMA_CPP_STRICT=1"), "entry", "--", "true"); r.code != 2 || !strings.Contains(r.stdout+r.stderr, want) {
		t.Errorf("strict entry: want exit 2 and %q:\n%v", want, r)
	}
	if r := runLB(t, entryEnv, "entry", "--", "true"); !strings.Contains(r.stdout+r.stderr, want) || strings.Contains(r.stdout+r.stderr, "a ready") {
		t.Errorf("entry: want the error and no instance started:\n%v", r)
	}

	missing := writeFile(t, filepath.Join(dir, "missing.toml"), "[master]\nllama_cpp_path = \"/nonexistent/llama-server\"\n[instance.a.server]\nport = 1\nctx_sise = 1\n")
	r = runLB(t, env, "plan", "--config", missing)
	if r.code != 0 || !strings.Contains(r.stderr, missing+":2: server keys: not checked against llama-server's flags (/nonexistent/llama-server does not exist here)") {
		t.Errorf("missing executable: want the skipped check said:\n%v", r)
	}
}

func TestStandinVersionAndHelp(t *testing.T) {
	out, err := exec.Command(standin, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "version: ") || !strings.Contains(string(out), "built with") {
		t.Errorf("--version: %v %q", err, out)
	}
	out, err = exec.Command(standin, "--port", "1", "--help").Output()
	for _, flag := range []string{"--ctx-size", "--n-gpu-layers", "--flash-attn [on|off|auto]", "--no-webui", "--metrics", "--alias", "--lora"} {
		if err != nil || !strings.Contains(string(out), flag) {
			t.Errorf("--help lacks %s (%v)", flag, err)
		}
	}
}

// A container command that cannot be started: entry exits 127, as a shell
// does (README "Exit statuses").
func TestEntryCommandNotFound(t *testing.T) {
	r := runLB(t, nil, "entry", "--app-dir", t.TempDir(), "--", "/nonexistent/command")
	if r.code != 127 || !strings.Contains(r.stdout+r.stderr, "cannot start /nonexistent/command") {
		t.Errorf("want exit 127:\n%v", r)
	}
}
