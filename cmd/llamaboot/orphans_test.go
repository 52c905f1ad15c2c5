package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A supervisor SIGKILLed outside a container leaves an instance that
// ignores SIGTERM (its Pdeathsig) running on its port. The next boot stops
// it first, saying so, and starts its own instead of reporting the port
// taken.
func TestNextBootStopsSurvivors(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	cfg, _ := instanceConfig(t, dir, "a")
	env := []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=50", "STANDIN_IGNORE_TERM=1"}
	first := startEntry(t, app, env, "--grace", "1s")
	old := first.waitReady(t, "a")["a"].PID
	t.Cleanup(func() { syscall.Kill(-old, syscall.SIGKILL) })
	first.cmd.Process.Signal(syscall.SIGKILL)
	first.wait(t, 10*time.Second)
	time.Sleep(300 * time.Millisecond) // its Pdeathsig SIGTERM, ignored
	if !processAlive(old) {
		t.Fatalf("the instance did not survive its supervisor (pid %d)", old)
	}

	second := startEntry(t, app, env, "--grace", "1s")
	line := second.waitOutput(t, fmt.Sprintf(`stopped a \(pid %d\) left running by a previous supervisor \(pid %d\) that ended without stopping it: SIGTERM, then SIGKILL after 1s`, old, first.cmd.Process.Pid), 20*time.Second)
	now := second.waitReady(t, "a")["a"]
	if processAlive(old) || now.PID == old {
		t.Errorf("survivor %d still there (now pid %d)", old, now.PID)
	}
	if out := second.out.String(); strings.Contains(out, "port taken") || regexp.MustCompile(`(?m)stopped a \(pid`).FindAllStringIndex(out, -1) == nil {
		t.Errorf("second boot:\n%s\n(line %q)", out, line)
	}
	second.cmd.Process.Signal(syscall.SIGTERM)
	second.wait(t, 20*time.Second)
}

// TestNextBootStopsOrphanedGroupMembers: a server that started a helper
// in its process group dies with its SIGKILLed supervisor (Pdeathsig);
// the helper, in the dead server's group, lived on for good: the next
// boot looked only at the recorded server's pid. It stops the helper now,
// one line naming it, and leaves alone a process of the same uid outside
// the group.
func TestNextBootStopsOrphanedGroupMembers(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	helperPID := filepath.Join(dir, "helper.pid")
	wrapper := writeFile(t, filepath.Join(dir, "llama-server-wrapper"), fmt.Sprintf("#!/bin/sh\ncase \"$*\" in --help|--version) exec %[2]s \"$@\";; esac\nsleep 1000 &\necho $! > %[1]s\nexec %[2]s \"$@\"\n", helperPID, standin))
	if err := os.Chmod(wrapper, 0o755); err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 1)
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[master]\nllama_cpp_path = %q\n[instance.control]\nlog_dir = %q\n[instance.server]\nhost = \"127.0.0.1\"\n[instance.a.server]\nport = %d\n",
		wrapper, filepath.Join(dir, "logs"), ports[0]))
	env := []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=50"}
	first := startEntry(t, app, env, "--grace", "2s")
	server := first.waitReady(t, "a")["a"].PID
	var helper int
	waitFor(t, "the helper's pid", 10*time.Second, func() bool {
		b, _ := os.ReadFile(helperPID)
		helper, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return helper > 0
	})
	t.Cleanup(func() { syscall.Kill(helper, syscall.SIGKILL) })
	// Outside the group, same uid, started later: not the group's.
	bystander := exec.Command("sleep", "1000")
	if err := bystander.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bystander.Process.Kill(); bystander.Wait() })
	first.cmd.Process.Signal(syscall.SIGKILL)
	first.wait(t, 10*time.Second)
	waitFor(t, "the server ended by its Pdeathsig", 10*time.Second, func() bool { return !processAlive(server) })
	if pgid, err := syscall.Getpgid(helper); err != nil || pgid != server {
		t.Fatalf("the helper (pid %d) is not left in the server's group %d: %d, %v", helper, server, pgid, err)
	}

	second := startEntry(t, app, env, "--grace", "2s")
	second.waitOutput(t, fmt.Sprintf(`stopped pid %d \(sleep\) of a's process group \(its server, pid %d, is gone\) left running by a previous supervisor \(pid %d\) that ended without stopping it: SIGTERM\n`, helper, server, first.cmd.Process.Pid), 20*time.Second)
	second.waitReady(t, "a")
	if processAlive(helper) {
		t.Errorf("helper %d still running", helper)
	}
	if !processAlive(bystander.Process.Pid) {
		t.Errorf("a process outside the group was stopped")
	}
	if n := strings.Count(second.out.String(), "left running by a previous supervisor"); n != 1 {
		t.Errorf("want one line, got %d:\n%s", n, second.out.String())
	}
	second.cmd.Process.Signal(syscall.SIGTERM)
	second.wait(t, 20*time.Second)
}
