package proc

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startGroup starts script in a process group of its own, ended with the
// test.
func startGroup(t *testing.T, script string) int {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	return cmd.Process.Pid
}

// waitFor polls cond until it holds; a last guard for a loaded machine,
// not a timing.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A main thread that is runnable but gets no CPU waits in the run queue,
// and that wait is counted; a sleeping one never waits. Three spinners
// share one CPU, so each waits about two thirds of the time however idle
// the machine is.
func TestMainWait(t *testing.T) {
	var one unix.CPUSet
	one.Set(0)
	pin := func(pid int) {
		if err := unix.SchedSetaffinity(pid, &one); err != nil {
			t.Fatalf("pin %d: %v", pid, err)
		}
	}
	var spinners []int
	for range 3 {
		pid := startGroup(t, "while :; do :; done")
		pin(pid)
		spinners = append(spinners, pid)
	}
	sleeper := startGroup(t, "exec sleep 60")
	pin(sleeper)
	// Until sh has become sleep and sleep is in its nanosleep, it is
	// runnable and, sharing the spinners' CPU, waits: measure from then.
	waitFor(t, "the sleeper to sleep", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", sleeper))
		return err == nil && strings.HasPrefix(string(b), fmt.Sprintf("%d (sleep) S ", sleeper)) && wchanSleeping(sleeper)
	})
	s0, _ := ServerUsage(sleeper)
	w0, _ := ServerUsage(spinners[0])
	waitFor(t, "a spinner sharing its CPU to wait 200ms", func() bool {
		w1, _ := ServerUsage(spinners[0])
		return w1.MainWait-w0.MainWait >= 200*time.Millisecond
	})
	if s1, _ := ServerUsage(sleeper); s1.MainWait != s0.MainWait || s1.Main != s0.Main {
		t.Errorf("a sleeping main thread waited %s and ran %s", s1.MainWait-s0.MainWait, s1.Main-s0.Main)
	}
}

// Only the server's own processes count: a helper burning CPU in its
// process group (a wrapper's, a log pipe) is not a sign that the server
// works, while a child running the server's executable, or one named
// llama-server, is.
func TestServerUsageCountsOnlyTheServer(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	yes, err := exec.LookPath("yes")
	if err != nil {
		t.Fatal(err)
	}
	named := filepath.Join(t.TempDir(), "llama-server-child")
	b, err := os.ReadFile(yes)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(named, b, 0o755); err != nil {
		t.Fatal(err)
	}
	// The leader is the "server" (sleep: idle); yes burns a core beside it.
	helper := startGroup(t, yes+" >/dev/null & exec "+sleep+" 60")
	// The same, but the burner is the server's child: its own executable
	// copied under another name would not count, one named llama-server* does.
	child := startGroup(t, named+" >/dev/null & exec "+sleep+" 60")
	h0, _ := ServerUsage(helper)
	c0, _ := ServerUsage(child)
	waitFor(t, "the llama-server-named child to use 200ms", func() bool {
		c1, _ := ServerUsage(child)
		return c1.All-c0.All >= 200*time.Millisecond
	})
	// Let the helper's yes have had as much time as the child had.
	waitFor(t, "the helper's yes to run", func() bool {
		return groupCPUAll(helper)-h0.All >= 200*time.Millisecond
	})
	if h1, ok := ServerUsage(helper); !ok || h1.All != h0.All || h1.Main != h0.Main {
		t.Errorf("a helper's CPU counted as the server's: %+v → %+v (ok %v)", h0, h1, ok)
	}
}

// groupCPUAll is the CPU time of every process in group pgid, whatever it
// runs: what the watchdog must not take as the server's.
func groupCPUAll(pgid int) time.Duration {
	var all time.Duration
	for _, pid := range groupMembers(pgid) {
		f := statFields("/proc/" + strconv.Itoa(pid) + "/stat")
		if len(f) < 13 {
			continue
		}
		all += ticks(f[11]) + ticks(f[12])
	}
	return all
}

// A process group whose leader spins counts CPU; one whose leader sleeps
// (stuck on a wait, as a wedged slot loop is) does not.
func TestMainThreadCPU(t *testing.T) {
	busy := startGroup(t, "while :; do :; done")
	idle := startGroup(t, "exec sleep 60")
	b0, ok := MainThreadCPU(busy)
	if !ok {
		t.Fatal("no process in the busy group")
	}
	i0, _ := MainThreadCPU(idle)
	// However busy the machine, the spinner's time grows; the sleeper's
	// does not meanwhile.
	deadline := time.Now().Add(20 * time.Second)
	for {
		b1, _ := MainThreadCPU(busy)
		if b1-b0 >= 100*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a spinning main thread used %s in 20s", b1-b0)
		}
		time.Sleep(20 * time.Millisecond)
	}
	i1, ok := MainThreadCPU(idle)
	if !ok {
		t.Fatal("no process in the idle group")
	}
	if i1 != i0 {
		t.Errorf("a sleeping main thread used %s", i1-i0)
	}
	// The whole group counts every thread's time, the main thread's too.
	if u, ok := ServerUsage(busy); !ok || u.All < u.Main || u.Main < 100*time.Millisecond {
		t.Errorf("ServerUsage(busy) = %+v, %v", u, ok)
	}
	if _, ok := MainThreadCPU(os.Getpid() + 1<<22); ok {
		t.Error("a group that does not exist has CPU time")
	}
}

func ticks(s string) time.Duration {
	n, _ := strconv.ParseInt(s, 10, 64)
	return time.Duration(n) * clockTick
}

// wchanSleeping reports whether pid waits in a (clock_)nanosleep, not on
// the way there; true where the kernel hides wait channels ("0").
func wchanSleeping(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
	return err != nil || string(b) == "0" || strings.Contains(string(b), "nanosleep")
}
