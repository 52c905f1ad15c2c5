package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	ctl "github.com/llamaboot/llamaboot/internal/control"
)

// TestRestartStopStart: restart restarts a running instance whatever its
// policy (default on-failure; the stand-in exits 0 on SIGTERM) and answers
// once it is ready again; stop keeps it down until start.
func TestRestartStopStart(t *testing.T) {
	dir := t.TempDir()
	cfg, _ := instanceConfig(t, dir, "a")
	env := []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=100"}
	e := startEntry(t, filepath.Join(dir, "app"), env)
	e.waitOutput(t, `a ready after`, 20*time.Second)
	first := e.status(t).Instances[0].PID
	appEnv := []string{"AUTO_INFER_APP_DIR=" + e.app}

	r := runLB(t, appEnv, "restart", "a")
	if r.code != 0 || !strings.Contains(r.stdout, "a: restart requested") || !strings.Contains(r.stdout, "a: ready after") {
		t.Fatal(r)
	}
	in := e.status(t).Instances[0]
	if in.State != "ready" || in.PID == first || in.PID == 0 || in.Restarts != 0 || in.Want != "up" {
		t.Errorf("after restart: %+v (want a new pid, ready, no crash counted)", in)
	}
	if processAlive(first) {
		t.Error("the old process is still alive")
	}
	// Running again, --json still says how and why the last one ended; the
	// table drops it once the new process is ready.
	if in.LastExit == nil || in.LastReason != "restart requested" {
		t.Errorf("after restart: last exit %v, reason %q", in.LastExit, in.LastReason)
	}
	if r := runLB(t, appEnv, "status"); r.code != 0 || !strings.Contains(r.stdout, "LAST EXIT (WHY)") || strings.Contains(r.stdout, " (restart requested)") {
		t.Errorf("status text keeps a stale last exit:\n%s", r)
	}

	r = runLB(t, appEnv, "stop", "a")
	if r.code != 0 || !strings.Contains(r.stdout, "a: stopped") {
		t.Fatal(r)
	}
	if in := e.status(t).Instances[0]; in.State != "stopped" || in.Want != "down" || in.PID != 0 || in.LastReason != "stop requested" {
		t.Errorf("after stop: %+v", in)
	}
	// Stopping what is stopped changes nothing and says so at once.
	r = runLB(t, appEnv, "stop", "a")
	if r.code != 0 || !strings.Contains(r.stdout, "a: already stopped") {
		t.Fatal(r)
	}
	r = runLB(t, appEnv, "start", "a")
	if r.code != 0 || !strings.Contains(r.stdout, "a: ready after") {
		t.Fatal(r)
	}
	if in := e.status(t).Instances[0]; in.State != "ready" || in.Want != "up" {
		t.Errorf("after start: %+v", in)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"restart"}, "restart needs one instance name: llamaboot restart NAME"},
		{[]string{"restart", "nope"}, `no instance "nope" is supervised (instances: a)`},
		{[]string{"stop", "a/../a"}, `invalid instance name "a/../a"`},
	} {
		r := runLB(t, appEnv, c.args...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%q: want exit 2 and %q: %v", c.args, c.want, r)
		}
	}
	if in := e.status(t).Instances[0]; in.State != "ready" {
		t.Errorf("refused requests touched it: %+v", in)
	}
}

// healthServer answers /health with 200 on a loopback port from this test
// process: "another process" as far as llamaboot is concerned.
func healthServer(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, `{"status":"ok"}`) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// TestReadinessIsTheInstancesOwn: another process answering /health on
// the instance's port is not our instance being ready.
func TestReadinessIsTheInstancesOwn(t *testing.T) {
	dir := t.TempDir()
	port := healthServer(t)
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[master]\nllama_cpp_path = %q\n[instance.control]\nlog_dir = %q\n[instance.a.server]\nport = %d\n", standin, dir, port))
	holder := fmt.Sprintf("port 127.0.0.1:%d is already in use by pid %d", port, os.Getpid())

	r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + filepath.Join(dir, "app")}, "run", "--config", cfg, "--wait")
	if r.code != 2 || !strings.Contains(r.stderr, holder) || !strings.Contains(r.stderr, "nothing was started") || strings.Contains(r.stdout, "ready") {
		t.Errorf("run --wait: want exit 2 naming the holder: %v", r)
	}

	e := startEntry(t, filepath.Join(dir, "app"), []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg})
	e.waitOutput(t, `a failed: `, 20*time.Second)
	in := e.status(t).Instances[0]
	if in.State != "failed" || in.LastReason != "port taken" || !strings.Contains(in.Error, holder) {
		t.Errorf("entry: %+v", in)
	}
	if strings.Contains(e.out.String(), "a ready") || strings.Contains(e.out.String(), "a started") {
		t.Errorf("an instance on a taken port was started or called ready:\n%s", e.out.String())
	}
}

// TestKilledCommandExitStatus: a command that ignores SIGTERM is killed
// after the grace and entry exits 128+9, as tini does.
func TestKilledCommandExitStatus(t *testing.T) {
	// SIGTERM only once the trap is set (a file says so): under load it
	// came first, the shell died of it and entry said 143.
	trapped := filepath.Join(t.TempDir(), "trapped")
	e := startEntry(t, t.TempDir(), nil, "--grace", "500ms", "--", "sh", "-c", `trap "" TERM; touch `+trapped+`; while :; do sleep 0.05; done`)
	waitFor(t, "the command's trap", 10*time.Second, func() bool { _, err := os.Stat(trapped); return err == nil })
	e.cmd.Process.Signal(syscall.SIGTERM)
	if code := e.wait(t, 15*time.Second); code != 137 {
		t.Errorf("exit %d, want 137\n%s", code, e.out.String())
	}
}

// TestBootSaysWhatWasNotDone: a config or package set without its switch
// is said, with the variable that enables it.
func TestBootSaysWhatWasNotDone(t *testing.T) {
	e := startEntry(t, t.TempDir(), []string{"AUTO_INFER_LLAMA_CPP_CONFIG=/config/cfg.toml", "AUTO_INFER_LLAMA_CPP_PKG_PATH=/pkg/p.tar.gz"}, "--", "true")
	if code := e.wait(t, 15*time.Second); code != 0 {
		t.Fatal(e.out.String())
	}
	for _, want := range []string{
		"AUTO_INFER_LLAMA_CPP_CONFIG is set but AUTO_INFER_LLAMA_CPP_ON_BOOT is not: no server started at boot (set AUTO_INFER_LLAMA_CPP_ON_BOOT=1 to start the instances of /config/cfg.toml)",
		"AUTO_INFER_LLAMA_CPP_PKG_PATH is set but AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT is not: nothing installed at boot (set AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT=1 to install /pkg/p.tar.gz)",
	} {
		if !strings.Contains(e.out.String(), want) {
			t.Errorf("no %q in:\n%s", want, e.out.String())
		}
	}
}

// TestPlainRunInstancesStatusAndStop: background instances of plain run
// (no supervisor) show in status and stop with stop NAME.
func TestPlainRunInstancesStatusAndStop(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	cfg, _ := instanceConfig(t, dir, "bg")
	appEnv := []string{"AUTO_INFER_APP_DIR=" + app}
	r := runLB(t, append(appEnv, "STANDIN_LOAD_MS=50"), "run", "--config", cfg, "--wait")
	if r.code != 0 {
		t.Fatal(r)
	}
	r = runLB(t, appEnv, "status", "--json")
	var st ctl.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st.Unsupervised) != 1 {
		t.Fatalf("%v %v", err, r)
	}
	bg := st.Unsupervised[0]
	t.Cleanup(func() { syscall.Kill(bg.PID, syscall.SIGKILL) })
	if bg.Name != "bg" || !processAlive(bg.PID) || bg.LogFile != filepath.Join(dir, "logs", "llama-server-bg.log") {
		t.Errorf("%+v", bg)
	}
	r = runLB(t, appEnv, "status")
	if !strings.Contains(r.stdout, "started by plain run, not supervised") || !strings.Contains(r.stdout, fmt.Sprintf("pid %d", bg.PID)) {
		t.Errorf("%v", r)
	}
	// logs has no supervisor to read through: it says where the log is.
	r = runLB(t, appEnv, "logs", "bg")
	if r.code == 0 || !strings.Contains(r.stderr, "bg was started by plain run (pid") || !strings.Contains(r.stderr, "its log is "+bg.LogFile) {
		t.Errorf("logs of a plain run instance: %v", r)
	}
	// Running it again names the recorded instance holding the port.
	r = runLB(t, appEnv, "run", "--config", cfg)
	if r.code != 2 || !strings.Contains(r.stderr, fmt.Sprintf(`by pid %d, instance "bg" started by an earlier plain run (llamaboot stop bg)`, bg.PID)) {
		t.Errorf("run again: %v", r)
	}
	r = runLB(t, appEnv, "restart", "bg")
	if r.code != 1 || !strings.Contains(r.stderr, "bg was started by plain run") || !strings.Contains(r.stderr, "so llamaboot cannot restart it: llamaboot stop bg, then llamaboot run again") {
		t.Errorf("%v", r)
	}
	r = runLB(t, appEnv, "stop", "bg")
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("bg (pid %d) stopped", bg.PID)) {
		t.Fatal(r)
	}
	waitFor(t, "bg to be gone", 10*time.Second, func() bool { return !processAlive(bg.PID) })
	r = runLB(t, appEnv, "status")
	if strings.Contains(r.stdout, "started by plain run") {
		t.Errorf("stopped instance still listed: %v", r)
	}
	r = runLB(t, appEnv, "stop", "bg")
	if r.code != 1 || !strings.Contains(r.stderr, `no instance "bg" started by plain run is running`) {
		t.Errorf("%v", r)
	}
}
