package entry

import (
	"bytes"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/printer"
	"github.com/llamaboot/llamaboot/internal/testutil"
)

// TestCommandKillSaidOnlyWhenDelivered: at the end of the grace period
// entry SIGKILLs a command still running, and says so. It said so (2 runs
// in 3 at a container stop) of a command that had exited while the
// instances stopped: its status in as the deadline passed, or the signal
// sent to nothing (ESRCH). Only a live command is said killed.
func TestCommandKillSaidOnlyWhenDelivered(t *testing.T) {
	var out bytes.Buffer
	e := &Entry{o: Options{Grace: 8 * time.Second}, p: printer.New(&out, &out, "[llamaboot]", false)}
	start := func(args ...string) *exec.Cmd {
		c := exec.Command(args[0], args[1:]...)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		e.cmdProc = c.Process
		return c
	}
	open, closed := make(chan struct{}), make(chan struct{})
	close(closed)
	fired := func() <-chan time.Time { ch := make(chan time.Time, 1); ch <- time.Now(); return ch }

	// Its status came in as the grace ended (both ready): never killed,
	// whichever select would pick.
	c := start("sleep", "100")
	for range 40 {
		e.awaitCommand(closed, fired())
	}
	if out.Len() != 0 || c.Process.Signal(syscall.Signal(0)) != nil {
		t.Errorf("the command's exit was in: want it left alone, nothing said; said %q", out.String())
	}

	// Exited and reaped, its status not passed on yet: the signal reaches
	// nothing.
	c = start("true")
	c.Wait()
	e.awaitCommand(open, fired())
	if out.Len() != 0 {
		t.Errorf("reaped command: said %q", out.String())
	}

	// Exited, a zombie not reaped yet: a signal to it is "delivered" but
	// kills nothing.
	c = start("true")
	testutil.WaitFor(t, "a zombie", 10*time.Second, func() bool { _, running := procStart(c.Process.Pid); return !running })
	e.awaitCommand(open, fired())
	if out.Len() != 0 {
		t.Errorf("zombie command: said %q", out.String())
	}

	// Still running: killed, and said.
	c = start("sleep", "100")
	e.awaitCommand(open, fired())
	err := c.Wait()
	if ws, ok := c.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("running command: want SIGKILLed, got %v", err)
	}
	if want := "still running after 8s: SIGKILL"; !strings.Contains(out.String(), want) || strings.Count(out.String(), "\n") != 1 {
		t.Errorf("running command: want one line %q, got %q", want, out.String())
	}
}
