package launch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/logfile"
)

func TestEnviron(t *testing.T) {
	base := []string{"PATH=/bin", "CUDA_VISIBLE_DEVICES=7", "LD_LIBRARY_PATH=/usr/lib/x"}
	for _, c := range []struct {
		name string
		env  map[string]string
		base []string
		want []string
	}{
		{"gpu ids replace", map[string]string{"CUDA_VISIBLE_DEVICES": "0,1"}, base,
			[]string{"PATH=/bin", "CUDA_VISIBLE_DEVICES=0,1", "LD_LIBRARY_PATH=/opt/llama/bin:/usr/lib/x"}},
		{"all leaves it alone", map[string]string{}, base,
			[]string{"PATH=/bin", "CUDA_VISIBLE_DEVICES=7", "LD_LIBRARY_PATH=/opt/llama/bin:/usr/lib/x"}},
		{"none hides GPUs", map[string]string{"CUDA_VISIBLE_DEVICES": ""}, []string{"PATH=/bin"},
			[]string{"PATH=/bin", "CUDA_VISIBLE_DEVICES=", "LD_LIBRARY_PATH=/opt/llama/bin"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Environ(c.base, config.Instance{Env: c.env}, "/opt/llama/bin")
			if !slices.Equal(got, c.want) {
				t.Errorf("got %q\nwant %q", got, c.want)
			}
		})
	}
}

func TestWaitReady(t *testing.T) {
	var ready atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" || !ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
	}))
	defer srv.Close()
	time.AfterFunc(300*time.Millisecond, func() { ready.Store(true) })
	took, err := WaitReady(context.Background(), Target{URL: srv.URL}, 5*time.Second, nil)
	if err != nil || took < 300*time.Millisecond {
		t.Fatalf("took %s, err %v", took, err)
	}
	// Seen promptly: the fast poll is 25 ms.
	if took > 300*time.Millisecond+250*time.Millisecond {
		t.Logf("readiness seen %s after the server became ready (machine busy?)", took-300*time.Millisecond)
	}

	ready.Store(false)
	if _, err := WaitReady(context.Background(), Target{URL: srv.URL}, 200*time.Millisecond, nil); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("timeout while loading: %v", err)
	}
	exited := make(chan struct{})
	close(exited)
	if _, err := WaitReady(context.Background(), Target{URL: "http://127.0.0.1:1"}, time.Second, exited); !errors.Is(err, ErrExited) {
		t.Errorf("exited process: %v", err)
	}
}

func TestTailAndOpenLog(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a", "b", "x.log")
	f, err := OpenLog(p)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		f.WriteString(strings.Repeat("x", i) + "\n")
	}
	f.Close()
	f, _ = OpenLog(p) // appends
	f.WriteString("last line\n")
	f.Close()
	tail := strings.Split(Tail(p, 3), "\n")
	if len(tail) != 3 || tail[2] != "last line" || tail[1] != strings.Repeat("x", 49) {
		t.Errorf("tail = %q", tail)
	}
	if Tail(filepath.Join(t.TempDir(), "missing"), 3) != "" {
		t.Error("tail of a missing file")
	}
	os.Remove(p)
}

func TestCommandNotFound(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "l")
	searched := []string{"/app/llama-cpp/bin/llama-server", "/hard/volume/workspace/llama-cpp/build/bin/llama-server"}
	for _, c := range []struct {
		in   config.Instance
		want string
	}{
		{config.Instance{Name: "x", Executable: "/nonexistent/llama-server", ExecutablePos: config.Pos{File: "cfg.toml", Line: 2}},
			`instance "x": executable /nonexistent/llama-server not found (stat /nonexistent/llama-server: no such file or directory); it is master.llama_cpp_path at cfg.toml:2: correct it, or remove it to use the installed bundle`},
		{config.Instance{Name: "x", Executable: "surely-not-on-path-llama-server", Searched: searched},
			`instance "x": executable surely-not-on-path-llama-server not found: looked in /app/llama-cpp/bin, /hard/volume/workspace/llama-cpp/build/bin and PATH (/nonexistent-bin:/also-not); install a bundle (llamaboot install, into --app-dir / AUTO_INFER_APP_DIR, default /soft/app) or set master.llama_cpp_path`},
	} {
		c.in.LogFile = logFile
		_, _, err := Command(c.in, []string{"PATH=/nonexistent-bin:/also-not"}, OwnGroup)
		var nf *NotFoundError
		if !errors.As(err, &nf) || err.Error() != c.want {
			t.Errorf("got  %v\nwant %s", err, c.want)
		}
	}
	// Found on the PATH given (not ours).
	dir := t.TempDir()
	exe := filepath.Join(dir, "my-server")
	os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755)
	if p, err := Resolve(config.Instance{Executable: "my-server"}, []string{"PATH=/nope:" + dir}); err != nil || p != exe {
		t.Errorf("Resolve = %q, %v", p, err)
	}
}

// A link planted at a predictable log path is refused and the file it
// names is left alone (through OpenLog, as Command opens logs).
func TestOpenLogRefusesPlantedLink(t *testing.T) {
	dir := t.TempDir()
	sentinel := filepath.Join(dir, "sentinel")
	if err := os.WriteFile(sentinel, []byte("keep me\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "llama-server-a.log")
	if err := os.Symlink(sentinel, logPath); err != nil {
		t.Fatal(err)
	}
	_, _, err := Command(config.Instance{Name: "a", Executable: "/bin/true", LogFile: logPath}, nil, OwnGroup)
	var le *logfile.LinkError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), logPath) || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("want a clear link error naming %s, got %v", logPath, err)
	}
	b, _ := os.ReadFile(sentinel)
	fi, _ := os.Stat(sentinel)
	if string(b) != "keep me\n" || fi.Mode().Perm() != 0o600 {
		t.Errorf("sentinel changed: %q %v", b, fi.Mode())
	}
	// A dangling link (to a file not yet made) is refused too, and not created.
	os.Remove(logPath)
	target := filepath.Join(dir, "would-be-created")
	os.Symlink(target, logPath)
	if _, err := OpenLog(logPath); !errors.As(err, &le) {
		t.Errorf("dangling link: %v", err)
	}
	if _, err := os.Lstat(target); err == nil {
		t.Error("the dangling link's target was created")
	}
}

func TestOpenLogModeUnderUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	p := filepath.Join(t.TempDir(), "new", "x.log")
	f, err := OpenLog(p)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o644 {
		t.Errorf("created %v under umask 077, want 0644", fi.Mode().Perm())
	}
}

// TestPortOwnership: a port held by this test process is named with our
// pid, and a 200 from it does not make another process ready.
func TestPortOwnership(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	in := config.Instance{Name: "a", Host: "127.0.0.1", Port: port}
	err := CheckPort(in)
	var pt *PortTakenError
	if !errors.As(err, &pt) || !pt.BadInput() || !strings.Contains(err.Error(), fmt.Sprintf("port 127.0.0.1:%d is already in use by pid %d (", port, os.Getpid())) {
		t.Fatalf("%v", err)
	}
	if !ListensOn(os.Getpid(), port) {
		t.Error("we hold the listener")
	}
	child := exec.Command("sleep", "30")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { child.Process.Kill(); child.Wait() }()
	if ListensOn(child.Process.Pid, port) {
		t.Error("the child does not hold it")
	}
	_, err = WaitReady(context.Background(), Target{URL: srv.URL, PID: child.Process.Pid, Port: port}, 300*time.Millisecond, nil)
	if err == nil || !strings.Contains(err.Error(), "200 OK, but from another process on port") {
		t.Errorf("a foreign 200 counted: %v", err)
	}
	if _, err := WaitReady(context.Background(), Target{URL: srv.URL, PID: os.Getpid(), Port: port}, 5*time.Second, nil); err != nil {
		t.Errorf("our own 200: %v", err)
	}
	srv.Close()
	if err := CheckPort(in); err != nil {
		t.Errorf("free port: %v", err)
	}
	if PortHolder(port) != "" {
		t.Error("holder of a free port")
	}
}

func TestEnvironDropsDownloadTokens(t *testing.T) {
	env := Environ([]string{"PATH=/bin", "AUTO_INFER_LLAMA_CPP_PKG_TOKEN=t1", "AUTO_INFER_MODEL_TOKEN=t2", "HOME=/root"}, config.Instance{}, "/b")
	for _, kv := range env {
		if strings.Contains(kv, "TOKEN") {
			t.Errorf("child environment keeps %s", kv)
		}
	}
	if !slices.Contains(env, "HOME=/root") || !slices.Contains(env, "PATH=/bin") {
		t.Errorf("other variables lost: %v", env)
	}
}

// TestEnvironScrubsCredentials: a server inherited the package URL with its
// userinfo and signed query, and the registry credentials; it gets the URL
// as llamaboot prints it, redacted, and no registry credentials.
func TestEnvironScrubsCredentials(t *testing.T) {
	env := Environ([]string{"PATH=/bin",
		"AUTO_INFER_LLAMA_CPP_PKG_PATH=https://ghp_SECRET@host/x.tar.gz?X-Amz-Signature=SIGSECRET",
		"AUTO_INFER_REGISTRY_AUTH=user:PWSECRET", "AUTO_INFER_APP_DIR=/soft/app", "HF_TOKEN=hf_kept"}, config.Instance{}, "/b")
	for _, kv := range env {
		if strings.Contains(kv, "SECRET") {
			t.Errorf("child environment keeps %s", kv)
		}
	}
	if !slices.Contains(env, "AUTO_INFER_APP_DIR=/soft/app") || !slices.Contains(env, "HF_TOKEN=hf_kept") ||
		!slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "AUTO_INFER_LLAMA_CPP_PKG_PATH=https://") }) {
		t.Errorf("what the server may use was dropped: %q", env)
	}
}

// TestEnvironDropsModelTokenVariables: the variables a plan's models name
// in token_env are download credentials too.
func TestEnvironDropsModelTokenVariables(t *testing.T) {
	env := Environ([]string{"PATH=/bin", "MY_HOST_TOKEN=SECRET", "OTHER=x"}, config.Instance{SecretEnv: []string{"MY_HOST_TOKEN"}}, "/b")
	if slices.ContainsFunc(env, func(kv string) bool { return strings.Contains(kv, "SECRET") }) || !slices.Contains(env, "OTHER=x") {
		t.Errorf("got %q", env)
	}
}
