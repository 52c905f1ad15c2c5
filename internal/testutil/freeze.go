package testutil

import (
	"errors"
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Freezer holds one thread of another process stopped, as a stuck worker
// loop is: the thread burns no CPU and answers nothing, while the process's
// other threads (llama-server's HTTP threads) run on.
type Freezer struct {
	thaw chan struct{}
	done chan error
}

// FreezeThread stops thread tid (for a process's main thread, its pid)
// with ptrace: PTRACE_SEIZE, then PTRACE_INTERRUPT, which stops that one
// thread and no other. It stays stopped until Thaw, or until the process
// dies: the freezer goes on reaping the tracee's notifications, so that
// its real parent still learns of its death.
func FreezeThread(tid int) (*Freezer, error) {
	f := &Freezer{thaw: make(chan struct{}), done: make(chan error, 1)}
	started := make(chan error, 1)
	go func() {
		// ptrace requests must come from the tracing thread.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := unix.PtraceSeize(tid); err != nil {
			started <- fmt.Errorf("ptrace seize %d: %w", tid, err)
			return
		}
		if err := unix.PtraceInterrupt(tid); err != nil {
			_ = unix.PtraceDetach(tid)
			started <- fmt.Errorf("ptrace interrupt %d: %w", tid, err)
			return
		}
		var ws unix.WaitStatus
		if _, err := unix.Wait4(tid, &ws, unix.WALL, nil); err != nil {
			started <- fmt.Errorf("wait for %d to stop: %w", tid, err)
			return
		}
		if !ws.Stopped() {
			started <- fmt.Errorf("thread %d did not stop (%v)", tid, ws)
			return
		}
		started <- nil
		f.done <- f.hold(tid)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return f, nil
}

// hold keeps the thread stopped, answering its notifications, until
// thawed or dead.
func (f *Freezer) hold(tid int) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-f.thaw:
			err := unix.PtraceDetach(tid)
			if errors.Is(err, unix.ESRCH) {
				return nil // it died meanwhile
			}
			return err
		case <-tick.C:
		}
		var ws unix.WaitStatus
		pid, err := unix.Wait4(tid, &ws, unix.WALL|unix.WNOHANG, nil)
		switch {
		case errors.Is(err, unix.ECHILD):
			return nil // no longer ours to trace: it is gone
		case err != nil:
			return err
		case pid == tid && (ws.Exited() || ws.Signaled()):
			return nil
		case pid == tid && ws.Stopped() && ws.StopSignal() != unix.SIGSTOP && ws.StopSignal() != unix.SIGTRAP:
			// A signal meant for it (SIGTERM, say) is delivered, but the
			// thread stays in the group-stop it is in: re-interrupt.
			_ = unix.PtraceCont(tid, int(ws.StopSignal()))
			_ = unix.PtraceInterrupt(tid)
		}
	}
}

// Thaw lets the thread run again and ends the tracing.
func (f *Freezer) Thaw() error {
	select {
	case <-f.thaw:
	default:
		close(f.thaw)
	}
	return <-f.done
}
