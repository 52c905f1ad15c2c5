package supervise

import (
	"os/exec"
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
