package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	ctl "github.com/llamaboot/llamaboot/internal/control"
)

// asUser1000 is uid 1000 in group 0 with no supplementary groups, as
// `docker exec -u 1000` runs a uid without a passwd entry.
var asUser1000 = &syscall.Credential{Uid: 1000, Gid: 0, Groups: []uint32{}}

// openDir is a temp dir other users can enter and read.
func openDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestControlSocketRefusesOtherUsers: the supervisor (root here) runs what
// `run` hands it, so only root and its own uid may use the socket. A user
// in group 0 (uid 1000, gid 0) is refused: by the socket's 0600 mode, and,
// should the socket be reachable anyway, by the SO_PEERCRED check on every
// request. Nothing it hands over runs.
func TestControlSocketRefusesOtherUsers(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test needs root (CI runs as root) to act as another user")
	}
	dir := openDir(t)
	app := filepath.Join(dir, "app")
	cfg, _ := instanceConfig(t, dir, "a")
	env := []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=50"}
	e := startEntry(t, app, env)
	e.waitOutput(t, `a ready after`, 20*time.Second)
	if err := os.Chmod(app, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := ctl.SocketPath(app)
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v (%v), want 0600", fi.Mode(), err)
	}

	// A hand-over whose executable would run as root.
	marks := filepath.Join(dir, "marks")
	os.MkdirAll(marks, 0o777)
	os.Chmod(marks, 0o777)
	evil := writeFile(t, filepath.Join(dir, "evil.sh"), fmt.Sprintf("#!/bin/sh\n[ \"$1\" = --help ] && exit 0\nid -u >> %s/ran-as\nsleep 30\n", marks))
	os.Chmod(evil, 0o755)
	evilCfg := writeFile(t, filepath.Join(dir, "evil.toml"), fmt.Sprintf("[master]\nllama_cpp_path = %q\n[instance.control]\nlog_dir = %q\n[instance.evil.server]\nport = %d\n", evil, marks, freePorts(t, 1)[0]))
	appEnv := []string{"AUTO_INFER_APP_DIR=" + app}

	denied := "permission denied on " + sock + ": only root and the supervisor's own user may use it (you are uid 1000)"
	for _, args := range [][]string{{"status"}, {"restart", "a"}, {"run", "--config", evilCfg}} {
		r := runAs(t, asUser1000, appEnv, args...)
		if r.code != 1 || !strings.Contains(r.stderr, denied) {
			t.Errorf("uid 1000 gid 0, %q through a 0600 socket: %v", args, r)
		}
	}

	// The mode is one guard; the peer check is the other. Open the mode
	// (as a chmod race or a mistake would) and ask again.
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	refused := "permission denied: uid 1000 may not use this supervisor (only root and uid 0 may; group membership does not count)"
	for _, args := range [][]string{{"status"}, {"stop", "a"}, {"run", "--config", evilCfg}} {
		r := runAs(t, asUser1000, appEnv, args...)
		if r.code != 1 || !strings.Contains(r.stderr, refused) {
			t.Errorf("uid 1000 gid 0, %q through an open socket: %v", args, r)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(marks, "ran-as")); strings.Contains("\n"+string(b), "\n0\n") {
		t.Errorf("the handed-over script ran as root: %q", b)
	}
	st := e.status(t) // root may
	if len(st.Instances) != 1 || st.Instances[0].State != "ready" {
		t.Errorf("the refused requests changed something: %+v", st.Instances)
	}
}
