package main

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ctl "github.com/llamaboot/llamaboot/internal/control"
)

// runQuiet runs llamaboot as runLB does, from any goroutine: a failure to
// start is a result (code -1), not t.Fatal.
func runQuiet(env []string, args ...string) result {
	cmd := exec.Command(llamaboot, args...)
	cmd.Env = cleanEnv(env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		r.code, r.stderr = -1, err.Error()
	}
	return r
}

// TestSocketCapNeverSaysNoSupervisor: 40 `logs -f` followers used to
// take the socket's 32 connections of uid 0, and every later client was
// told "no supervisor is running": a liveness probe failed, status said
// none ran and exited 0. Followers have their own cap now (the 8 over it
// are told so, exit 1), and the healthcheck, status and stop answer
// truthfully beside the 32 left; then a burst of 120 commands, more than
// the per-uid connection cap, all answer (a refusal at accept is
// answered "busy" and retried), none says "no supervisor".
func TestSocketCapNeverSaysNoSupervisor(t *testing.T) {
	dir := t.TempDir()
	cfg, _ := supervisedConfig(t, dir, "", inst{"a", ""}, inst{"b", ""})
	app := filepath.Join(dir, "app")
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg})
	defer func() {
		e.cmd.Process.Signal(syscall.SIGTERM)
		e.wait(t, 60*time.Second)
	}()
	e.waitReady(t, "a", "b")
	env := []string{"AUTO_INFER_APP_DIR=" + app}

	type follower struct {
		cmd  *exec.Cmd
		errb *bytes.Buffer
		done chan struct{}
	}
	const followers = 40
	var fs []*follower
	refused := make(chan *follower, followers)
	for range followers {
		f := &follower{cmd: exec.Command(llamaboot, "logs", "-f", "a", "--tail", "0"), errb: &bytes.Buffer{}, done: make(chan struct{})}
		f.cmd.Env = cleanEnv(env...)
		f.cmd.Stderr = f.errb
		if err := f.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { f.cmd.Wait(); close(f.done); refused <- f }()
		fs = append(fs, f)
	}
	defer func() {
		for _, f := range fs {
			f.cmd.Process.Kill()
			<-f.done
		}
	}()
	// Those over the cap end at once, saying why; the others stream on.
	deadline := time.After(60 * time.Second)
	for range followers - 32 {
		select {
		case f := <-refused:
			if code := f.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(f.errb.String(), "busy: 32 log streams (logs -f) of uid ") || strings.Contains(f.errb.String(), "no supervisor") {
				t.Errorf("a follower over the cap: exit %d, %s", code, f.errb)
			}
		case <-deadline:
			t.Fatalf("%d followers over the cap were not refused within 60s", followers-32)
		}
	}

	if r := runQuiet(env, "healthcheck", "--live"); r.code != 0 || !strings.HasPrefix(r.stdout, "live: ") {
		t.Errorf("healthcheck --live beside 32 followers: %s", r)
	}
	if r := runQuiet(env, "status"); r.code != 0 || !strings.Contains(r.stdout, "supervisor: pid ") {
		t.Errorf("status beside 32 followers: %s", r)
	}
	if r := runQuiet(env, "stop", "b"); r.code != 0 || !strings.Contains(r.stdout, "b: stopped") {
		t.Errorf("stop b beside 32 followers: %s", r)
	}

	// 120 at once, with the 32 followers still connected: more than the
	// 96 connections uid 0 may hold.
	cmds := [][]string{{"status"}, {"healthcheck", "--live"}, {"restart", "a", "--no-wait"}, {"start", "b", "--no-wait"}}
	results := make([]result, 120)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runQuiet(env, cmds[i%len(cmds)]...)
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 || strings.Contains(r.stdout+r.stderr, "no supervisor") {
			t.Errorf("%v in a burst of 120: %s", cmds[i%len(cmds)], r)
		}
	}
	select {
	case f := <-refused:
		t.Errorf("a follower within the cap ended: exit %d, %s", f.cmd.ProcessState.ExitCode(), f.errb)
	default:
	}
}

// TestSocketBusyIsReported: with every connection uid 0 may hold taken
// (96 requests whose body never comes), status and the healthcheck are
// refused at accept: they retry a while, then report the refusal, exit 1;
// status no longer says no supervisor runs and exits 0. Once the
// connections close, both answer.
func TestSocketBusyIsReported(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	e := startEntry(t, app, nil, "--", "sleep", "1000")
	defer func() {
		e.cmd.Process.Signal(syscall.SIGTERM)
		e.wait(t, 60*time.Second)
	}()
	env := []string{"AUTO_INFER_APP_DIR=" + app}
	sock := ctl.SocketPath(app)
	waitFor(t, "the supervisor", 30*time.Second, func() bool { return strings.Contains(runQuiet(env, "status").stdout, "supervisor: pid ") })
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range 96 {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		fmt.Fprintf(c, "POST /control HTTP/1.1\r\nHost: llamaboot\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
	}
	// Every one of them is being served (its handler waits for the body)
	// once a 97th is refused: the refusal says so.
	var rs [2]result
	var wg sync.WaitGroup
	for i, args := range [][]string{{"status"}, {"healthcheck", "--live"}} {
		wg.Add(1)
		go func() { defer wg.Done(); rs[i] = runQuiet(env, args...) }()
	}
	wg.Wait()
	for _, r := range rs {
		if r.code != 1 || !strings.Contains(r.stderr, "busy: 96 connections of uid ") || strings.Contains(r.stdout+r.stderr, "none running") || strings.Contains(r.stderr, "no supervisor") {
			t.Errorf("over the cap: want exit 1 saying busy: %s", r)
		}
	}
	for _, c := range held {
		c.Close()
	}
	held = nil
	if r := runQuiet(env, "healthcheck", "--live"); r.code != 0 {
		t.Errorf("once the connections closed: %s", r)
	}
}
