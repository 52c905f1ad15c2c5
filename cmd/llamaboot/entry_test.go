package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	ctl "github.com/llamaboot/llamaboot/internal/control"
	"github.com/llamaboot/llamaboot/internal/testutil"
)

// entryProc is a running `llamaboot entry`.
type entryProc struct {
	cmd    *exec.Cmd
	out    *testutil.SyncBuffer
	app    string
	done   chan struct{}
	code   int
	exited time.Time
}

func startEntry(t *testing.T, app string, env []string, args ...string) *entryProc {
	t.Helper()
	return startEntryWrapped(t, nil, app, env, args...)
}

// startEntryWrapped starts entry through wrap, a command that execs its
// arguments (prlimit --nofile=N), so the process is entry itself.
func startEntryWrapped(t *testing.T, wrap []string, app string, env []string, args ...string) *entryProc {
	t.Helper()
	e := &entryProc{out: &testutil.SyncBuffer{}, app: app, done: make(chan struct{})}
	argv := append(append(append([]string{}, wrap...), llamaboot, "entry", "--app-dir", app), args...)
	e.cmd = exec.Command(argv[0], argv[1:]...)
	e.cmd.Env = cleanEnv(env...)
	e.cmd.Stdout, e.cmd.Stderr = e.out, e.out
	// A child that outlives a killed entry (a test failed midway) keeps
	// the output pipe open: stop waiting for it soon after entry is gone.
	e.cmd.WaitDelay = 5 * time.Second
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		e.cmd.Wait()
		e.code = e.cmd.ProcessState.ExitCode()
		e.exited = time.Now()
		close(e.done)
	}()
	t.Cleanup(func() {
		select {
		case <-e.done:
		default:
			e.cmd.Process.Kill()
			<-e.done
		}
	})
	return e
}

func (e *entryProc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-e.done:
		return e.code
	case <-time.After(timeout):
		t.Fatalf("entry did not exit within %s\n%s", timeout, e.out.String())
	}
	return -1
}

func (e *entryProc) waitOutput(t *testing.T, re string, timeout time.Duration) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(timeout)
	for {
		if m := rx.FindStringSubmatch(e.out.String()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			// The output as it is now, not as it was when the wait began.
			t.Fatalf("timed out after %s waiting for output %q in:\n%s", timeout, re, e.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *entryProc) status(t *testing.T) ctl.Status {
	t.Helper()
	r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + e.app}, "status", "--json")
	if r.code != 0 {
		t.Fatal(r)
	}
	var st ctl.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	return st
}

func instanceConfig(t *testing.T, dir string, names ...string) (string, []int) {
	t.Helper()
	ports := freePorts(t, len(names))
	var b strings.Builder
	fmt.Fprintf(&b, "[master]\nllama_cpp_path = %q\n[instance.control]\nlog_dir = %q\n[instance.server]\nhost = \"127.0.0.1\"\n", standin, filepath.Join(dir, "logs"))
	for i, n := range names {
		fmt.Fprintf(&b, "[instance.%s.server]\nport = %d\n", n, ports[i])
	}
	return writeFile(t, filepath.Join(dir, "cfg.toml"), b.String()), ports
}

func TestEntryExitStatus(t *testing.T) {
	for _, c := range []struct {
		name string
		cmd  []string
		sig  syscall.Signal
		want int
	}{
		{"success", []string{"true"}, 0, 0},
		{"exit 3", []string{"sh", "-c", "exit 3"}, 0, 3},
		{"SIGTERM to entry", []string{"sleep", "60"}, syscall.SIGTERM, 143},
		{"no command, SIGTERM", nil, syscall.SIGTERM, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := []string{}
			if c.cmd != nil {
				args = append([]string{"--"}, c.cmd...)
			}
			e := startEntry(t, t.TempDir(), nil, args...)
			if c.sig != 0 {
				e.waitOutput(t, `started sleep|no command given`, 10*time.Second)
				e.cmd.Process.Signal(c.sig)
			}
			if code := e.wait(t, 15*time.Second); code != c.want {
				t.Errorf("exit %d, want %d\n%s", code, c.want, e.out.String())
			}
		})
	}
}

func TestEntryForwardsSignals(t *testing.T) {
	dir := t.TempDir()
	mark := filepath.Join(dir, "got")
	script := fmt.Sprintf(`for s in HUP USR1 USR2 QUIT; do trap "echo $s >> %s" $s; done; trap "echo TERM >> %s; exit 7" TERM; echo ready >> %s; while :; do sleep 0.05; done`, mark, mark, mark)
	e := startEntry(t, filepath.Join(dir, "app"), nil, "--", "sh", "-c", script)
	waitFor(t, "the command to start", 10*time.Second, func() bool { b, _ := os.ReadFile(mark); return strings.Contains(string(b), "ready") })
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT} {
		e.cmd.Process.Signal(sig)
		name := strings.TrimPrefix(map[syscall.Signal]string{syscall.SIGHUP: "HUP", syscall.SIGUSR1: "USR1", syscall.SIGUSR2: "USR2", syscall.SIGQUIT: "QUIT"}[sig], "")
		waitFor(t, name+" to reach the command", 5*time.Second, func() bool { b, _ := os.ReadFile(mark); return strings.Contains(string(b), name) })
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	if code := e.wait(t, 10*time.Second); code != 7 {
		t.Errorf("exit %d, want the command's 7\n%s", code, e.out.String())
	}
}

func TestEntryReapsOrphans(t *testing.T) {
	// The command leaves orphans behind (double fork); they are re-parented
	// to entry (subreaper) and must not stay zombies.
	mark := filepath.Join(t.TempDir(), "orphaned")
	e := startEntry(t, t.TempDir(), nil, "--", "sh", "-c", "for i in 1 2 3 4 5; do (sleep 0.1 &) ; done; touch "+mark+"; sleep 3")
	waitFor(t, "the orphans to be made", 10*time.Second, func() bool { _, err := os.Stat(mark); return err == nil })
	// They end after 0.1 s and come to entry; each must be reaped while
	// the command still runs: wait for entry to have no child but sh.
	children := func() (alive, zombies int) {
		entries, _ := os.ReadDir("/proc")
		for _, d := range entries {
			pid, err := strconv.Atoi(d.Name())
			if err != nil {
				continue
			}
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			s := string(b)
			i := strings.LastIndexByte(s, ')')
			if i < 0 || i+2 >= len(s) {
				continue
			}
			f := strings.Fields(s[i+2:])
			if len(f) > 1 && f[1] == strconv.Itoa(e.cmd.Process.Pid) {
				if f[0] == "Z" {
					zombies++
				} else {
					alive++
				}
			}
		}
		return
	}
	waitFor(t, "the orphans to be reaped", 10*time.Second, func() bool { a, z := children(); return a == 1 && z == 0 })
	if code := e.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit %d\n%s", code, e.out.String())
	}
}

// TestEntryAsPID1 runs entry as PID 1 of a new PID namespace, as in a
// container: orphans are reaped and the command's status comes out.
func TestEntryAsPID1(t *testing.T) {
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatalf("unshare (util-linux) is needed: %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount-proc", llamaboot, "entry", "--app-dir", dir, "--",
		"sh", "-c", `for i in 1 2 3; do (sleep 0.1 &); done; sleep 0.5; ps -o pid=,stat= 2>/dev/null || cat /proc/[0-9]*/stat; exit 3`)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil && strings.Contains(string(out), "Operation not permitted") {
		t.Skipf("no permission for a PID namespace here (CI runs as root): %s", out)
	}
	ee, _ := err.(*exec.ExitError)
	if ee == nil || ee.ExitCode() != 3 {
		t.Fatalf("want exit 3 from the command via PID 1, got %v\n%s", err, out)
	}
	if strings.Contains(string(out), ") Z ") || regexp.MustCompile(`(?m)^\s*\d+\s+Z`).Match(out) {
		t.Errorf("zombies in the namespace:\n%s", out)
	}
	if !strings.Contains(string(out), "command exited with status 3") {
		t.Errorf("no exit event:\n%s", out)
	}
}

func TestEntryServesAndStops(t *testing.T) {
	dir := t.TempDir()
	cfg, ports := instanceConfig(t, dir, "alpha", "beta")
	env := []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=400"}
	e := startEntry(t, filepath.Join(dir, "app"), env)
	m := e.waitOutput(t, `alpha ready after ([0-9.]+)s`, 20*time.Second)
	took, _ := strconv.ParseFloat(m[1], 64)
	// Readiness is seen soon after the server becomes ready (400 ms); the
	// margin allows for a loaded CI machine, not for a slow poll.
	if took < 0.4 || took > 0.4+1.5 {
		t.Errorf("alpha ready after %.2fs, want 0.40–1.90s", took)
	}
	e.waitOutput(t, `beta ready after`, 20*time.Second)
	for _, p := range ports {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/health", p))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("port %d: %v %v", p, err, resp)
		}
		resp.Body.Close()
	}
	st := e.status(t)
	if st.Supervisor == nil || len(st.Instances) != 2 {
		t.Fatalf("status: %+v", st)
	}
	var pids []int
	for i, in := range st.Instances {
		if in.State != "ready" || in.PID == 0 || in.Port != ports[i] || in.URL != fmt.Sprintf("http://127.0.0.1:%d", ports[i]) ||
			in.LogFile != filepath.Join(dir, "logs", "llama-server-"+in.Name+".log") || in.LastExit != nil || in.UptimeS <= 0 {
			t.Errorf("instance status: %+v", in)
		}
		pids = append(pids, in.PID)
		// Its own process group.
		if pgid, _ := syscall.Getpgid(in.PID); pgid != in.PID {
			t.Errorf("%s not in its own process group", in.Name)
		}
	}
	// The helper entry points exist and dispatch.
	link := filepath.Join(dir, "app", "llama-cpp", "check-and-run-llama-cpp.sh")
	if target, err := os.Readlink(link); err != nil || target != llamaboot {
		t.Errorf("%s -> %q %v", link, target, err)
	}

	start := time.Now()
	e.cmd.Process.Signal(syscall.SIGTERM)
	if code := e.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit %d\n%s", code, e.out.String())
	}
	if d := e.exited.Sub(start); d > 3*time.Second {
		t.Errorf("clean stop took %s", d)
	}
	for _, pid := range pids {
		if processAlive(pid) {
			t.Errorf("instance pid %d still alive after stop", pid)
		}
	}
	if strings.Contains(e.out.String(), "still running after") {
		t.Errorf("clean servers should not need SIGKILL:\n%s", e.out.String())
	}
}

func TestEntryKillsServerIgnoringSIGTERM(t *testing.T) {
	dir := t.TempDir()
	cfg, _ := instanceConfig(t, dir, "stubborn")
	env := []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_IGNORE_TERM=1", "STANDIN_LOAD_MS=50"}
	e := startEntry(t, filepath.Join(dir, "app"), env, "--grace", "1500ms")
	e.waitOutput(t, `stubborn ready`, 20*time.Second)
	pid := e.status(t).Instances[0].PID
	start := time.Now()
	e.cmd.Process.Signal(syscall.SIGTERM)
	if code := e.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit %d\n%s", code, e.out.String())
	}
	d := e.exited.Sub(start)
	if d < 1500*time.Millisecond || d > 6*time.Second {
		t.Errorf("stop took %s, want just over the 1.5 s grace", d)
	}
	if !strings.Contains(e.out.String(), "still running after 1.5s: SIGKILL") || processAlive(pid) {
		t.Errorf("stubborn server not killed (alive %v):\n%s", processAlive(pid), e.out.String())
	}
}

func TestEntryRestartsThenFails(t *testing.T) {
	dir := t.TempDir()
	cfg, _ := instanceConfig(t, dir, "crashy")
	env := []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_EXIT_AFTER_MS=100", "STANDIN_EXIT_CODE=3"}
	e := startEntry(t, filepath.Join(dir, "app"), env, "--restart-backoff", "100ms", "--crash-loop", "4")
	e.waitOutput(t, `crashy failed: 4 quick crashes in a row`, 30*time.Second)
	out := e.out.String()
	// Exponential backoff: 0.1, 0.2, 0.4 s.
	for _, d := range []string{"restarting in 0.1s", "restarting in 0.2s", "restarting in 0.4s"} {
		if !strings.Contains(out, d) {
			t.Errorf("missing %q:\n%s", d, out)
		}
	}
	if !strings.Contains(out, "exited: exit code 3") || !strings.Contains(out, "exiting with 3 on purpose") {
		t.Errorf("exit code or log tail missing from output:\n%s", out)
	}
	st := e.status(t)
	if in := st.Instances[0]; in.State != "failed" || in.Restarts != 3 || in.LastExit == nil || *in.LastExit != "exit code 3" {
		t.Errorf("status: %+v", in)
	}
	// The container stays up; restart NAME tries again.
	select {
	case <-e.done:
		t.Fatal("entry exited after an instance failed")
	default:
	}
	// It crashes again before it is ready: restart says so, exit 1.
	r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + e.app}, "restart", "crashy")
	if r.code != 1 || !strings.Contains(r.stdout, "crashy: exit code 3 (crash) before it was ready; restarting in 0.1s") {
		t.Fatal(r)
	}
	e.waitOutput(t, `(?s)crashy failed.*crashy started`, 10*time.Second)
}

func TestRunHandsInstancesToSupervisor(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	cfg, _ := instanceConfig(t, dir, "late")
	e := startEntry(t, app, []string{"STANDIN_LOAD_MS=50"})
	e.waitOutput(t, `no command given`, 10*time.Second)
	r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "run", "--config", cfg, "--wait")
	if r.code != 0 || !strings.Contains(r.stdout, "handed to the supervisor") || !strings.Contains(r.stdout, "late: ready") {
		t.Fatal(r)
	}
	st := e.status(t)
	if len(st.Instances) != 1 || st.Instances[0].State != "ready" {
		t.Fatalf("status: %+v", st.Instances)
	}
	pid := st.Instances[0].PID
	r = runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "stop", "late")
	if r.code != 0 {
		t.Fatal(r)
	}
	waitFor(t, "late to stop", 10*time.Second, func() bool { return e.status(t).Instances[0].State == "stopped" })
	if processAlive(pid) {
		t.Error("stopped instance still running")
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	e.wait(t, 10*time.Second)
}

func TestStatusWithoutSupervisor(t *testing.T) {
	app := t.TempDir()
	r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "status")
	if r.code != 0 || !strings.Contains(r.stdout, "supervisor: none running") || !strings.Contains(r.stdout, "bundle: none installed") {
		t.Error(r)
	}
}

func TestRestartPolicies(t *testing.T) {
	dir := t.TempDir()
	ports := freePorts(t, 2)
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf(`
[master]
llama_cpp_path = %q
[instance.control]
log_dir = %q
[instance.never.control]
restart = "never"
[instance.never.server]
port = %d
[instance.clean.control]
restart = "on-failure"
[instance.clean.server]
port = %d
`, standin, dir, ports[0], ports[1]))
	// Both exit 0 after 200 ms: neither is restarted (never; on-failure with success).
	env := []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_EXIT_AFTER_MS=200", "STANDIN_EXIT_CODE=0"}
	e := startEntry(t, filepath.Join(dir, "app"), env, "--restart-backoff", "50ms")
	// The decision after each exit is an event of its own: stopped, not
	// restarting.
	e.waitOutput(t, `never exited: exit code 0`, 10*time.Second)
	e.waitOutput(t, `clean exited: exit code 0`, 10*time.Second)
	e.waitOutput(t, `never stopped \(exit code 0\)`, 10*time.Second)
	e.waitOutput(t, `clean stopped \(exit code 0\)`, 10*time.Second)
	if strings.Contains(e.out.String(), "restarting") {
		t.Errorf("restarted despite the policy:\n%s", e.out.String())
	}
	for _, in := range e.status(t).Instances {
		if in.State != "stopped" || in.Restarts != 0 {
			t.Errorf("%+v", in)
		}
	}
}

func TestRunWaitReportsFailureWithLogTail(t *testing.T) {
	dir := t.TempDir()
	ports := freePorts(t, 1)
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[master]\nllama_cpp_path = %q\n[instance.control]\nlog_dir = %q\n[instance.dies.server]\nport = %d\n", standin, dir, ports[0]))
	r := runLB(t, []string{"STANDIN_EXIT_AFTER_MS=50", "STANDIN_EXIT_CODE=4", "STANDIN_LOAD_MS=5000"}, "run", "--config", cfg, "--wait", "--timeout", "10s")
	if r.code != 1 || !strings.Contains(r.stderr, "instance dies not ready: exited before it was ready") ||
		!strings.Contains(r.stderr, "exiting with 4 on purpose") {
		t.Errorf("want a failure with the log's last lines: %v", r)
	}
}

// A CMD that cannot start ends entry with 127 at once even with instances
// started: they are stopped and reaped first, none left behind.
func TestEntryCmdNotFoundWithInstances(t *testing.T) {
	dir := t.TempDir()
	cfg, ports := instanceConfig(t, dir, "a")
	e := startEntry(t, filepath.Join(dir, "app"), []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg},
		"--grace", "2s", "--", "/nonexistent/cmd")
	if code := e.wait(t, 30*time.Second); code != 127 {
		t.Fatalf("exit %d, want 127\n%s", code, e.out)
	}
	if !strings.Contains(e.out.String(), "a stopped") {
		t.Errorf("instance not reported stopped:\n%s", e.out)
	}
	// Nothing listens on its port any more: the server was stopped.
	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/health", ports[0])); err == nil {
		resp.Body.Close()
		t.Errorf("instance still answering after entry exited")
	}
}

// run --config other.toml beside a supervisor that already runs a
// same-named instance with other settings: refused with what differs
// (exit 2, nothing restarted) unless --replace, which says what it did.
func TestRunBesideSupervisorRefusesToReplace(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	env := []string{"AUTO_INFER_APP_DIR=" + app}
	logs := filepath.Join(dir, "logs")
	port := freePorts(t, 1)[0]
	served := filepath.Join(dir, "served.toml")
	writeServers(t, served, logs, server{name: "a", port: port, server: "ctx_size = 1024"})
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + served, "STANDIN_LOAD_MS=50"})
	pid := e.waitReady(t, "a")["a"].PID

	other := filepath.Join(dir, "other.toml")
	writeServers(t, other, logs, server{name: "a", port: port, server: "ctx_size = 4096"})
	r := runLB(t, env, "run", "--config", other)
	want := "the supervisor already runs a with other settings; nothing was changed:\n  a: ctx_size 1024 → 4096\nrun --replace hands them over anyway"
	if r.code != 2 || !strings.Contains(r.stderr, want) {
		t.Errorf("run of another config: want exit 2 and %q:\n%v", want, r)
	}
	if now := e.status(t).Instances[0]; now.PID != pid {
		t.Errorf("a refused run restarted a: pid %d → %d", pid, now.PID)
	}
	if r := runLB(t, env, "run", "--config", served); r.code != 0 || !strings.Contains(r.stdout, "a: already supervised with these settings") {
		t.Errorf("run of the served config: %v", r)
	}
	r = runLB(t, env, "run", "--config", other, "--replace", "--wait")
	if r.code != 0 || !strings.Contains(r.stdout, "a: replaced (ctx_size 1024 → 4096); the supervisor restarts it with these settings") {
		t.Errorf("run --replace: %v", r)
	}
	if now := e.waitReady(t, "a")["a"]; now.PID == pid {
		t.Errorf("run --replace left a's process (pid %d) running", pid)
	}
}
