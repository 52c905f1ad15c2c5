package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The watchdog and the drain through the built binary and the stand-in:
// the timing rules themselves are unit-tested on a fake clock
// (internal/supervise/watchdog_test.go); these check the real probes,
// signals and processes.

const fastWatchdog = "liveness_interval = \"200ms\"\nliveness_timeout = \"100ms\"\nliveness_failures = 3\nrestart = \"always\""

func logOf(dir, name string) string {
	b, _ := os.ReadFile(filepath.Join(dir, "logs", "llama-server-"+name+".log"))
	return string(b)
}

func TestWatchdogKillsHungServer(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	cfg, _ := watchConfig(t, dir, fastWatchdog, "", "a")
	// Its worker loop wedges after two probes; /health keeps saying ok and
	// it prints nothing more. A helper runs in its process group.
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg,
		"STANDIN_LOAD_MS=50", "STANDIN_HANG_SLOTS_AFTER=2", "STANDIN_CHILD=1"})
	first := e.waitOutput(t, `a started: pid (\d+)`, 10*time.Second)[1]
	e.waitOutput(t, `a ready after`, 10*time.Second)
	child := regexp.MustCompile(`STANDIN_CHILD_PID (\d+)`)
	var helper int
	waitFor(t, "the helper's pid in the log", 10*time.Second, func() bool {
		m := child.FindStringSubmatch(logOf(dir, "a"))
		if m != nil {
			helper, _ = strconv.Atoi(m[1])
		}
		return m != nil
	})
	e.waitOutput(t, `a hung: 3 liveness probe\(s\) in a row failed over [0-9.]+m?s with its threads idle, no log output and no token progress meanwhile \(last: GET /slots: no answer within 100ms\); SIGKILL to its process group`, 15*time.Second)
	e.waitOutput(t, `a exited: killed by SIGKILL after`, 10*time.Second)
	e.waitOutput(t, `a restarting in`, 10*time.Second)
	second := e.waitOutput(t, `(?s)a restarting in.*a started: pid (\d+)`, 15*time.Second)[1]
	if second == first {
		t.Fatalf("not restarted: pid %s both times", first)
	}
	pid, _ := strconv.Atoi(first)
	if processAlive(pid) || processAlive(helper) {
		t.Errorf("the hung server (%v) or its group's helper (%v) is still alive", processAlive(pid), processAlive(helper))
	}
	if log := logOf(dir, "a"); strings.Contains(log, "got terminated") {
		t.Errorf("the hung server got SIGTERM; the watchdog sends SIGKILL:\n%s", log)
	}
	st := e.status(t)
	if in := st.Instances[0]; in.Restarts < 1 || in.LastExit == nil || *in.LastExit != "killed by SIGKILL" {
		t.Errorf("status %+v", in)
	}
}

func TestWatchdogLeavesBusyServerAlone(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	cfg, _ := watchConfig(t, dir, fastWatchdog, "", "a")
	// Wedged for probes, but printing progress every 50 ms: busy.
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg,
		"STANDIN_LOAD_MS=50", "STANDIN_HANG_SLOTS_AFTER=2", "STANDIN_HANG_LOG_MS=50"})
	pid := e.waitOutput(t, `a started: pid (\d+)`, 10*time.Second)[1]
	e.waitOutput(t, `a busy, left alone: 3 liveness probes in a row failed \(last: GET /slots: no answer within 100ms\), but its log grew by \d+ bytes since they began failing`, 15*time.Second)
	// Twice that many failed probes later it is still the same process,
	// reported not ready (not answering) but never hung.
	var line string
	waitFor(t, "8 failed probes in healthcheck's line", 15*time.Second, func() bool {
		r := healthcheck(t, app)
		line = r.stdout
		m := regexp.MustCompile(`not answering: (\d+) liveness probe`).FindStringSubmatch(line)
		n := 0
		if m != nil {
			n, _ = strconv.Atoi(m[1])
		}
		return r.code == 1 && n >= 8
	})
	if out := e.out.String(); strings.Contains(out, "a hung") || strings.Count(out, "a started: pid") != 1 {
		t.Errorf("a busy server was killed:\n%s", out)
	}
	if r := healthcheck(t, app, "--live"); r.code != 0 {
		t.Errorf("a busy server is live: %s", r)
	}
	if st := e.status(t); strconv.Itoa(st.Instances[0].PID) != pid {
		t.Errorf("pid %d, want %s", st.Instances[0].PID, pid)
	}
}

func TestLoadTimeoutRestartsThroughBinary(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	cfg, _ := watchConfig(t, dir, `ready_timeout = "300ms"`, "", "a")
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=600000"})
	e.waitOutput(t, `a: not ready after 300ms; restarting it`, 10*time.Second)
	e.waitOutput(t, `a restarting in`, 10*time.Second)
	e.waitOutput(t, `(?s)a restarting in.*a started: pid`, 10*time.Second)
}

func TestDrainWaitsForBusySlot(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	cfg, ports := watchConfig(t, dir, `drain_timeout = "5s"`, "", "a")
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg,
		"STANDIN_LOAD_MS=50", "STANDIN_GEN_MS=1500"})
	e.waitOutput(t, `a ready after`, 10*time.Second)
	// A completion keeps the one slot busy for 1.5 s.
	type answer struct {
		code int
		body string
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/completion", ports[0]), "application/json", strings.NewReader(`{"prompt":"hi"}`))
		if err != nil {
			done <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- answer{resp.StatusCode, string(b), err}
	}()
	waitFor(t, "the slot to be busy", 10*time.Second, func() bool { return strings.Contains(logOf(dir, "a"), "slot 0 processing a request") })
	r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "stop", "a")
	if r.code != 0 || !strings.Contains(r.stdout, "a: stopped") {
		t.Fatalf("stop: %s", r)
	}
	// The answer came whole: the stop waited for the slot.
	a := <-done
	if a.err != nil || a.code != 200 || !strings.Contains(a.body, "stand-in answer") {
		t.Errorf("the request in flight was cut: %+v", a)
	}
	e.waitOutput(t, `a: waited [0-9.]+s for its busy slot\(s\) to finish`, 10*time.Second)
	log := logOf(dir, "a")
	released, term := strings.Index(log, "slot 0 released"), strings.Index(log, "got terminated")
	if released < 0 || term < 0 || released > term {
		t.Errorf("SIGTERM came before the slot was released:\n%s", log)
	}
}
