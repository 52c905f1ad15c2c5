package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestPlanJSONMatchesParity(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/parity/*.toml")
	for _, f := range files {
		base := strings.TrimSuffix(f, ".toml")
		t.Run(filepath.Base(base), func(t *testing.T) {
			env := []string{"AUTO_INFER_APP_DIR=" + t.TempDir(), "AUTO_INFER_LLAMA_CPP_CONFIG=" + f}
			if ov, err := os.ReadFile(base + ".env-overrides.json"); err == nil {
				env = append(env, "AUTO_INFER_LLAMA_CPP_OVERRIDES="+string(ov))
			}
			r := runLB(t, env, "plan", "--json")
			if r.code != 0 {
				t.Fatal(r)
			}
			type fields struct {
				Name       string   `json:"name"`
				Executable string   `json:"executable"`
				Cmd        []string `json:"cmd"`
				LogFile    string   `json:"log_file"`
				Background bool     `json:"background"`
				GPUIDs     *string  `json:"gpu_ids"`
			}
			var got, want []fields
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
				t.Fatalf("plan --json is not JSON: %v\n%s", err, r.stdout)
			}
			exp, _ := os.ReadFile(base + ".expected.json")
			json.Unmarshal(exp, &want)
			if len(got)+len(want) > 0 && !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestPlanAndRunExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := writeFile(t, filepath.Join(dir, "bad.toml"), "[instance.a.control]\ngpu_id = \"0\"\n[instance.a.server]\nport = 0\n")
	disabled := writeFile(t, filepath.Join(dir, "off.toml"), "[master]\nenable = false\n[instance.a.server]\nport = 1\n")
	noModel := writeFile(t, filepath.Join(dir, "nomodel.toml"), "[master]\nllama_cpp_path = \""+standin+"\"\n[instance.a.server]\nport = 1\nmodel = \"/nonexistent/m.gguf\"\n")
	for _, c := range []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"plan valid", nil, []string{"plan", "--config", noModel}, 0, `model file /nonexistent/m.gguf does not exist (instance "a")`},
		{"plan invalid", nil, []string{"plan", "--config", bad}, 2, bad + `:2: instance.a.control.gpu_id: unknown key in [instance.a.control] (did you mean "gpu_ids"?)`},
		{"plan invalid port", nil, []string{"plan", "--config", bad}, 2, bad + ":4: instance.a.server.port: must be an integer from 1 to 65535"},
		{"plan missing file", nil, []string{"plan", "--config", filepath.Join(dir, "nope.toml")}, 2, "nope.toml cannot be read"},
		{"plan no config", nil, []string{"plan"}, 2, "no config"},
		{"plan bad overrides", []string{"AUTO_INFER_LLAMA_CPP_OVERRIDES={bad"}, []string{"plan", "--config", disabled}, 2, "AUTO_INFER_LLAMA_CPP_OVERRIDES is not a valid JSON object"},
		{"run no config", nil, []string{"run"}, 0, "nothing to launch"},
		{"run missing file", nil, []string{"run", "--config", filepath.Join(dir, "nope.toml")}, 2, "cannot be read"},
		{"run disabled", []string{"AUTO_INFER_LLAMA_CPP_CONFIG=" + disabled}, []string{"run"}, 0, "master.enable = false"},
		{"run invalid", nil, []string{"run", "--config", bad}, 2, "nothing was started"},
		{"run missing model", nil, []string{"run", "--config", noModel}, 2, `model file /nonexistent/m.gguf does not exist (instance "a")`},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := runLB(t, append([]string{"AUTO_INFER_APP_DIR=" + dir}, c.env...), c.args...)
			if r.code != c.code || !strings.Contains(r.stdout+r.stderr, c.want) {
				t.Errorf("want exit %d and %q, got %v", c.code, c.want, r)
			}
		})
	}
}

// standinLog is what the stand-in wrote about how it was started.
type standinLog struct {
	argv          []string
	env           map[string]string
	pid           int
	start, exited int64 // unix ms
}

func readStandinLog(t *testing.T, path string) standinLog {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("log %s: %v", path, err)
	}
	var l standinLog
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "STANDIN_ARGV "); ok {
			json.Unmarshal([]byte(v), &l.argv)
		}
		if v, ok := strings.CutPrefix(line, "STANDIN_ENV "); ok {
			json.Unmarshal([]byte(v), &l.env)
		}
		if v, ok := strings.CutPrefix(line, "STANDIN_PID "); ok {
			fmt.Sscan(v, &l.pid)
		}
		if v, ok := strings.CutPrefix(line, "STANDIN_START_MS "); ok {
			fmt.Sscan(v, &l.start)
		}
		if v, ok := strings.CutPrefix(line, "STANDIN_EXIT_MS "); ok {
			fmt.Sscan(v, &l.exited)
		}
	}
	return l
}

func TestRunLaunchesRealProcesses(t *testing.T) {
	dir := t.TempDir()
	ports := freePorts(t, 2)
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf(`
[master]
llama_cpp_path = %q
[instance.control]
log_dir = %q
[instance.server]
host = "127.0.0.1"
flash_attn = "auto"
[instance.one.control]
gpu_ids = "0,1"
[instance.one.server]
port = %d
alias = "one"
temp = 0.7
[instance.two.control]
gpu_ids = "none"
log_file = %q
[instance.two.server]
port = %d
jinja = true
`, standin, filepath.Join(dir, "logs", "nested"), ports[0], filepath.Join(dir, "other", "two.log"), ports[1]))

	r := runLB(t, []string{"LD_LIBRARY_PATH=/opt/x", "STANDIN_LOAD_MS=200"}, "run", "--config", cfg, "--wait", "--timeout", "20s")
	if r.code != 0 {
		t.Fatal(r)
	}
	for _, name := range []string{"one", "two"} {
		if !regexp.MustCompile(name + ` ready after [0-9.]+s`).MatchString(r.stdout) {
			t.Errorf("no readiness report for %s:\n%s", name, r.stdout)
		}
	}
	one := readStandinLog(t, filepath.Join(dir, "logs", "nested", "llama-server-one.log"))
	two := readStandinLog(t, filepath.Join(dir, "other", "two.log"))
	t.Cleanup(func() {
		syscall.Kill(one.pid, syscall.SIGKILL)
		syscall.Kill(two.pid, syscall.SIGKILL)
	})
	wantOne := []string{"--host", "127.0.0.1", "--flash-attn", "auto", "--port", fmt.Sprint(ports[0]), "--alias", "one", "--temp", "0.7"}
	if !reflect.DeepEqual(one.argv, wantOne) {
		t.Errorf("one argv = %q, want %q", one.argv, wantOne)
	}
	wantTwo := []string{"--host", "127.0.0.1", "--flash-attn", "auto", "--port", fmt.Sprint(ports[1]), "--jinja"}
	if !reflect.DeepEqual(two.argv, wantTwo) {
		t.Errorf("two argv = %q, want %q", two.argv, wantTwo)
	}
	libDir := filepath.Dir(standin)
	if one.env["CUDA_VISIBLE_DEVICES"] != "0,1" || one.env["LD_LIBRARY_PATH"] != libDir+":/opt/x" {
		t.Errorf("one env = %v", one.env)
	}
	if v, ok := two.env["CUDA_VISIBLE_DEVICES"]; !ok || v != "" {
		t.Errorf("gpu_ids none should set CUDA_VISIBLE_DEVICES empty, env = %v", two.env)
	}
	// Background instances outlive run, in their own session.
	if !processAlive(one.pid) || !processAlive(two.pid) {
		t.Fatal("background instances did not outlive run")
	}
	if sid, _ := getsid(one.pid); sid != one.pid {
		t.Errorf("background instance not in its own session (sid %d, pid %d)", sid, one.pid)
	}
}

func getsid(pid int) (int, error) {
	sid, _, errno := syscall.RawSyscall(syscall.SYS_GETSID, uintptr(pid), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(sid), nil
}

// TestForegroundInstancesRunSideBySide: the old launcher ran a foreground
// instance to completion before starting the next (defect D10).
func TestForegroundInstancesRunSideBySide(t *testing.T) {
	dir := t.TempDir()
	ports := freePorts(t, 2)
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf(`
[master]
llama_cpp_path = %q
[instance.control]
background = false
log_dir = %q
[instance.a.server]
port = %d
[instance.b.server]
port = %d
`, standin, dir, ports[0], ports[1]))
	start := time.Now()
	r := runLB(t, []string{"STANDIN_EXIT_AFTER_MS=1500", "STANDIN_EXIT_CODE=0", "STANDIN_LOAD_MS=100"}, "run", "--config", cfg, "--wait")
	if r.code != 0 {
		t.Fatal(r)
	}
	// Both became ready while the other was still running.
	if !strings.Contains(r.stdout, "a ready after") || !strings.Contains(r.stdout, "b ready after") {
		t.Fatalf("both foreground instances should be up at once:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "a exited") || !strings.Contains(r.stdout, "b exited") {
		t.Errorf("run should report both exits:\n%s", r.stdout)
	}
	a := readStandinLog(t, filepath.Join(dir, "llama-server-a.log"))
	b := readStandinLog(t, filepath.Join(dir, "llama-server-b.log"))
	if a.start == 0 || b.start == 0 || a.exited == 0 || b.exited == 0 {
		t.Fatalf("incomplete logs: a %+v b %+v", a, b)
	}
	if b.start >= a.exited || a.start >= b.exited {
		t.Errorf("instances ran one after the other: a %d–%d, b %d–%d", a.start, a.exited, b.start, b.exited)
	}
	t.Logf("two 1.5 s foreground instances took %s together", time.Since(start).Round(time.Millisecond))
}

func TestMultiCallName(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "check-and-run-llama-cpp.sh")
	if err := os.Symlink(llamaboot, link); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(link)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "nothing to launch") {
		t.Errorf("check-and-run-llama-cpp.sh should act as run: %v\n%s", err, out)
	}
}
