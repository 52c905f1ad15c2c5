package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestEscapedHelperDoesNotLeakPipes: a server wrapper leaves a helper
// behind with setsid, holding the server's stdout. Once the owner judged
// each exit at the flush limit, entry closes that pipe's read end: across
// crashes and restarts its descriptors do not grow (before: one pipe more
// per exit, for good), and the instance's log says once per exit who held
// the output open.
func TestEscapedHelperDoesNotLeakPipes(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "escapees")
	wrapper := writeFile(t, filepath.Join(dir, "bin", "llama-server"), fmt.Sprintf(
		"#!/bin/sh\ncase \"$*\" in *--help*|*--version*) exec %[1]s \"$@\";; esac\nsetsid sleep 1000 &\necho $! >> %[2]s\nexec %[1]s \"$@\"\n",
		standin, pidFile))
	must(t, os.Chmod(wrapper, 0o755))
	escapees := func() []int {
		b, _ := os.ReadFile(pidFile)
		var pids []int
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	t.Cleanup(func() {
		for _, pid := range escapees() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	port := freePorts(t, 1)[0]
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf(
		"[master]\nllama_cpp_path = %q\n[instance.control]\nlog_dir = %q\n[instance.server]\nhost = \"127.0.0.1\"\n[instance.x.server]\nport = %d\n",
		wrapper, filepath.Join(dir, "logs"), port))
	e := startEntry(t, filepath.Join(dir, "app"), []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=20"})
	env := []string{"AUTO_INFER_APP_DIR=" + e.app}
	pid := e.waitReady(t, "x")["x"].PID
	baseFiles, basePipes := openFDs(t, e.cmd.Process.Pid)

	// Each round: a crash (kill -9), then a restart, which also resets
	// the crash count; each exit leaves an escapee on its pipe.
	const rounds = 3
	for i := range rounds {
		syscall.Kill(pid, syscall.SIGKILL)
		old := pid
		waitFor(t, "x ready again after its crash", 30*time.Second, func() bool {
			in := byName(e.status(t))["x"]
			pid = in.PID
			return in.State == "ready" && in.PID != old && in.PID != 0
		})
		if r := runLB(t, env, "restart", "x"); r.code != 0 {
			t.Fatalf("round %d: restart: %v", i+1, r)
		}
		pid = byName(e.status(t))["x"].PID
	}
	files, pipes := openFDs(t, e.cmd.Process.Pid)
	if pipes != basePipes || files > baseFiles+2 {
		t.Errorf("entry's descriptors grew over %d exits with escaped helpers: %d → %d besides sockets (pipes %d → %d)", 2*rounds, baseFiles, files, basePipes, pipes)
	}
	// Once per exit, naming the helper that held the pipe.
	in := byName(e.status(t))["x"]
	b, err := os.ReadFile(in.LogFile)
	must(t, err)
	held := regexp.MustCompile(`output of pid \d+ still held open .* by pid (\d+) \(sleep\) outside its process group`).FindAllStringSubmatch(string(b), -1)
	esc := escapees()
	if len(held) != 2*rounds {
		t.Errorf("%d notes of output held open for %d exits:\n%s", len(held), 2*rounds, b)
	}
	for _, h := range held {
		if n, _ := strconv.Atoi(h[1]); !slices.Contains(esc, n) {
			t.Errorf("the note names pid %s, not one of the escapees %v", h[1], esc)
		}
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	e.wait(t, 15*time.Second)
}

// openFDs counts pid's open descriptors but sockets (the control
// connections of this test's own commands and the watchdog's keep-alive
// ones come and go with the load) and pidfds (os/exec holds one per child
// it started until the os.Process is collected: the reaper never calls
// Wait, and Release would race with readers of Process.Pid), and those of
// them that are pipes.
func openFDs(t *testing.T, pid int) (files, pipes int) {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	must(t, err)
	for _, ent := range ents {
		if l, err := os.Readlink(filepath.Join(dir, ent.Name())); err == nil && !strings.HasPrefix(l, "socket:") && l != "anon_inode:[pidfd]" {
			files++
			if strings.HasPrefix(l, "pipe:") {
				pipes++
			}
		}
	}
	return files, pipes
}
