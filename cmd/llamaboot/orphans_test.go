package main

import (
	"fmt"
	"path/filepath"
	"regexp"
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
