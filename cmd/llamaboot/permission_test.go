package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// runsAs1000 matches how the message names uid 1000, gid 1000 (with their
// names where /etc/passwd and /etc/group have them).
var runsAs1000 = regexp.MustCompile(`llamaboot runs as (\S+\()?(uid )?1000\)?:(\S+\()?(gid )?1000\)?`)

// sharedDir is a temp dir other users can read (t.TempDir is 0700).
func sharedDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		must(t, os.Chmod(d, 0o755))
	}
	return dir
}

// Permission errors name the path that refused, its owner and mode, who
// llamaboot runs as and the setting that moves the file — once, not as
// "create X: mkdir X: permission denied".
func TestPermissionErrorsSayWhatToChange(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run llamaboot as another user")
	}
	user := &syscall.Credential{Uid: 1000, Gid: 1000, Groups: []uint32{}}
	dir := sharedDir(t)
	pkg := releaseArchive(t, dir, "llama-b1000-bin-ubuntu-x64.tar.gz", "b1000")
	must(t, os.Chmod(pkg, 0o644))

	// install as a non-root user to the default /soft/app.
	r := runAs(t, user, []string{"AUTO_INFER_APP_DIR="}, "install", pkg)
	if r.code != 1 || !strings.Contains(r.stderr, "permission denied (") || !strings.Contains(r.stderr, "is owned by root(0):root(0), mode d") ||
		!runsAs1000.MatchString(r.stderr) ||
		!strings.Contains(r.stderr, "choose a place it can write with --app-dir or AUTO_INFER_APP_DIR (default /soft/app)") ||
		strings.Count(r.stderr, "mkdir") != 1 {
		t.Errorf("non-root install to /soft/app:\n%v", r)
	}

	// A root-owned app dir.
	app := filepath.Join(dir, "app")
	must(t, os.Mkdir(app, 0o755))
	r = runAs(t, user, nil, "install", "--app-dir", app, pkg)
	want := fmt.Sprintf("cannot mkdir %s/cache: permission denied (%s is owned by root(0):root(0), mode drwxr-xr-x 0755; llamaboot runs as USER); choose a place it can write with --app-dir or AUTO_INFER_APP_DIR", app, app)
	if r.code != 1 || !strings.Contains(runsAs1000.ReplaceAllString(r.stderr, "llamaboot runs as USER"), want) || strings.Contains(r.stderr, "create ") {
		t.Errorf("root-owned app dir: want %q:\n%v", want, r)
	}

	// run with a log_dir the user cannot create: the TOML key and its line.
	logs := filepath.Join(dir, "rootonly")
	must(t, os.Mkdir(logs, 0o755))
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[master]\nllama_cpp_path = %q\n[instance.control]\nlog_dir = %q\n[instance.a.server]\nport = %d\n",
		standin, filepath.Join(logs, "llama"), freePorts(t, 1)[0]))
	must(t, os.Chmod(cfg, 0o644))
	r = runAs(t, user, []string{"AUTO_INFER_APP_DIR=" + filepath.Join(dir, "userapp")}, "run", "--config", cfg)
	want = fmt.Sprintf("cannot mkdir %s/llama: permission denied (%s is owned by root(0):root(0), mode drwxr-xr-x 0755; llamaboot runs as USER); choose a place it can write with log_dir (%s:4) or log_file", logs, logs, cfg)
	if r.code != 1 || !strings.Contains(runsAs1000.ReplaceAllString(r.stderr, "llamaboot runs as USER"), want) {
		t.Errorf("run with a log_dir it cannot create: want %q:\n%v", want, r)
	}
}
