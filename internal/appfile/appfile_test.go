package appfile

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestPlantedLinkIsReplacedNotFollowed(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("host file\n"), 0o600)
	p := filepath.Join(dir, "cache.part")
	os.Symlink(victim, p)
	if err := WriteFile(p, []byte("download"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "host file\n" {
		t.Errorf("written through the link: victim now %q", b)
	}
	if fi, _ := os.Lstat(p); !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
		t.Errorf("%s is %v", p, fi.Mode())
	}
}

func TestExactModeUnderUmask077(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	p := filepath.Join(t.TempDir(), "f")
	f, err := OpenFile(p, os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
	// An existing file keeps its content and mode (a lock file held by another).
	os.Chmod(p, 0o600)
	os.WriteFile(p, []byte("pid 1"), 0o600)
	f, _ = OpenFile(p, os.O_RDWR, 0o644)
	f.Close()
	if b, _ := os.ReadFile(p); string(b) != "pid 1" {
		t.Errorf("existing content lost: %q", b)
	}
}

func TestDirectoryRefused(t *testing.T) {
	if _, err := OpenFile(t.TempDir(), os.O_RDONLY, 0o644); err == nil {
		t.Error("a directory was opened")
	}
}

// LockEphemeral: many holders in turn (each its own open file, as separate
// processes would have) never overlap, though each unlock removes the file
// others are waiting on; none is left afterwards.
func TestLockEphemeralExcludesAndLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	lock := filepath.Join(dir, ".m.gguf.llamaboot.lock")
	inside := filepath.Join(dir, "inside")
	var wg sync.WaitGroup
	var overlaps atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				unlock, err := LockEphemeral(context.Background(), lock, time.Minute, nil, nil)
				if err != nil {
					t.Error(err)
					return
				}
				f, err := os.OpenFile(inside, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
				if err != nil {
					overlaps.Add(1)
				} else {
					f.Close()
					os.Remove(inside)
				}
				unlock()
			}
		}()
	}
	wg.Wait()
	if n := overlaps.Load(); n > 0 {
		t.Errorf("%d times two holders were inside at once", n)
	}
	if es, _ := os.ReadDir(dir); len(es) != 0 {
		t.Errorf("left behind: %v", es)
	}
}
