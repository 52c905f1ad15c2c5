package launch

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
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
	took, err := WaitReady(context.Background(), srv.URL, 5*time.Second, nil)
	if err != nil || took < 300*time.Millisecond {
		t.Fatalf("took %s, err %v", took, err)
	}
	// Seen promptly: the fast poll is 25 ms.
	if took > 300*time.Millisecond+250*time.Millisecond {
		t.Logf("readiness seen %s after the server became ready (machine busy?)", took-300*time.Millisecond)
	}

	ready.Store(false)
	if _, err := WaitReady(context.Background(), srv.URL, 200*time.Millisecond, nil); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("timeout while loading: %v", err)
	}
	exited := make(chan struct{})
	close(exited)
	if _, err := WaitReady(context.Background(), "http://127.0.0.1:1", time.Second, exited); !errors.Is(err, ErrExited) {
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
	for _, exe := range []string{"/nonexistent/llama-server", "surely-not-on-path-llama-server"} {
		_, _, err := Command(config.Instance{Name: "x", Executable: exe, LogFile: filepath.Join(t.TempDir(), "l")}, nil, OwnGroup)
		var nf *NotFoundError
		if !errors.As(err, &nf) || !strings.Contains(err.Error(), "master.llama_cpp_path") {
			t.Errorf("%s: %v", exe, err)
		}
	}
}

// A link planted at a predictable log path is refused and the file it
// names is left alone.
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
	f, err := OpenLog(logPath)
	var le *LogLinkError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), logPath) || !strings.Contains(err.Error(), "symbolic link") {
		if f != nil {
			f.Close()
		}
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

func TestOpenLogModeAndSpecialFiles(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := t.TempDir()
	p := filepath.Join(dir, "x.log")
	f, err := OpenLog(p)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o644 {
		t.Errorf("created %v under umask 077, want 0644", fi.Mode().Perm())
	}
	fifo := filepath.Join(dir, "fifo.log")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenLog(fifo); err == nil || !strings.Contains(err.Error(), "named pipe, not a regular file") {
		t.Errorf("fifo: %v", err)
	}
	if _, err := OpenLog(dir); err == nil || !strings.Contains(err.Error(), "directory, not a regular file") {
		t.Errorf("directory: %v", err)
	}
}
