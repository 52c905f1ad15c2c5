package supervise

import (
	"os"
	"os/exec"
	"runtime/debug"
	"syscall"
	"testing"
	"time"
)

// TestReaperDispatches: one reaper reaps everything, yet each starter gets
// its own child's status, and orphans are reported separately.
func TestReaperDispatches(t *testing.T) {
	r := reapInTest(t)
	orphans := make(chan int, 8)
	r.Orphan = func(pid int, _ syscall.WaitStatus) { orphans <- pid }

	a, err := r.Start(exec.Command("sh", "-c", "exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := r.Start(exec.Command("sh", "-c", "kill -TERM $$"))
	// A double fork leaves an orphan that comes to us.
	c, _ := r.Start(exec.Command("sh", "-c", "(sleep 0.1 &)"))
	for _, w := range []struct {
		ch   <-chan syscall.WaitStatus
		code int
	}{{a, 3}, {b, 143}, {c, 0}} {
		select {
		case ws := <-w.ch:
			if got := ExitCode(ws); got != w.code {
				t.Errorf("exit code %d, want %d", got, w.code)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no status dispatched")
		}
	}
	select {
	case <-orphans:
	case <-time.After(5 * time.Second):
		t.Error("orphan was not reaped")
	}
}

// TestReaperReleasesChildren: a reaped child leaves no descriptor behind.
// os/exec keeps a pidfd per started process until Wait, which the reaper
// never calls; PID 1 restarting a crashing server must not gather them
// until a garbage collection happens to run (none runs here).
func TestReaperReleasesChildren(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	r := reapInTest(t)
	before := pidfds(t)
	for range 20 {
		ch, err := r.Start(exec.Command("true"))
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatal("no status dispatched")
		}
	}
	if after := pidfds(t); after > before {
		t.Errorf("20 reaped children left %d pidfds open (%d before)", after-before, before)
	}
}

// pidfds counts this process's open pidfds.
func pidfds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && l == "anon_inode:[pidfd]" {
			n++
		}
	}
	return n
}
