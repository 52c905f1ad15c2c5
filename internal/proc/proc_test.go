package proc

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// A process group whose leader spins counts CPU; one whose leader sleeps
// (stuck on a wait, as a wedged slot loop is) does not.
func TestMainThreadCPU(t *testing.T) {
	start := func(script string) int {
		cmd := exec.Command("sh", "-c", script)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
		return cmd.Process.Pid
	}
	busy := start("while :; do :; done")
	idle := start("exec sleep 60")
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
	if m, all, ok := GroupCPU(busy); !ok || all < m || m < 100*time.Millisecond {
		t.Errorf("GroupCPU(busy) = %s, %s, %v", m, all, ok)
	}
	if _, ok := MainThreadCPU(os.Getpid() + 1<<22); ok {
		t.Error("a group that does not exist has CPU time")
	}
}
