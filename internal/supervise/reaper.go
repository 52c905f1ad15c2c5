package supervise

import (
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/llamaboot/llamaboot/internal/launch"
)

// Reaper is the only code that waits for children. As PID 1 (or a child
// subreaper) we must reap every zombie, including orphans re-parented to us,
// but a wait4(-1) loop would steal the exit status that os/exec's Wait
// expects. So children are started through the Reaper and never Wait()ed;
// the reaper reaps everything and hands each status to whoever started
// that pid.
type Reaper struct {
	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus
	// Orphan is called for reaped processes nobody started through us.
	Orphan func(pid int, ws syscall.WaitStatus)
}

// NewReaper returns a reaper; call Reap whenever SIGCHLD arrives.
func NewReaper() *Reaper {
	return &Reaper{waiters: map[int]chan syscall.WaitStatus{}}
}

// Start starts cmd and returns a channel that receives its exit status.
// The lock spans start and registration so a child that dies at once is
// still matched to its waiter.
func (r *Reaper) Start(cmd *exec.Cmd) (<-chan syscall.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.waiters[cmd.Process.Pid] = ch
	return ch, nil
}

// Reap collects every exited child without blocking.
func (r *Reaper) Reap() {
	for {
		var ws syscall.WaitStatus
		r.mu.Lock()
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			r.mu.Unlock()
			return
		}
		ch, ok := r.waiters[pid]
		delete(r.waiters, pid)
		r.mu.Unlock()
		if ok {
			ch <- ws
		} else if r.Orphan != nil {
			r.Orphan(pid, ws)
		}
	}
}

// ExitCode turns a wait status into a shell-style code: the exit status,
// or 128+signal.
func ExitCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// describeExit says how a process ended, for events and status.
func describeExit(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + unix.SignalName(ws.Signal())
	}
	return "exit code " + strconv.Itoa(ws.ExitStatus())
}

// Children lists the pids whose parent is us (from /proc), to find
// stragglers after shutdown.
func Children() []int {
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && parentOf(pid) == self {
			out = append(out, pid)
		}
	}
	return out
}

func parentOf(pid int) int {
	f := launch.StatFields(pid) // state, ppid, …
	if len(f) < 2 {
		return -1
	}
	n, _ := strconv.Atoi(f[1])
	return n
}
