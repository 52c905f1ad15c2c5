package entry

import (
	"bufio"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestOrphanedMembers: the processes left in a server's process group
// are listed only once its leader is gone, only those started no earlier
// than it, and never for a group whose leader still runs (a live process
// at the recorded pid: the leader, or an unrelated one reusing its pid).
func TestOrphanedMembers(t *testing.T) {
	leader := exec.Command("sh", "-c", "sleep 1000 & echo $!; exec sleep 1000")
	leader.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := leader.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-leader.Process.Pid, syscall.SIGKILL); leader.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	helper, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	pid := leader.Process.Pid
	start, ok := procStart(pid)
	if !ok {
		t.Fatal("no start time of the leader")
	}
	pids := func(ms []member) []int {
		var out []int
		for _, m := range ms {
			out = append(out, m.pid)
		}
		return out
	}
	if got := orphanedMembers(pid, start); got != nil {
		t.Errorf("leader alive: listed %v", pids(got))
	}
	syscall.Kill(pid, syscall.SIGKILL)
	leader.Wait()
	got := pids(orphanedMembers(pid, start))
	if !slices.Equal(got, []int{helper}) {
		t.Errorf("leader gone: listed %v, want [%d]", got, helper)
	}
	hs, _ := procStart(helper)
	if got := orphanedMembers(pid, hs+1); got != nil {
		t.Errorf("recorded leader started after the helper: listed %v", pids(got))
	}
}
