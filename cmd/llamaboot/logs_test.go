package main

import (
	"bufio"
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

	"github.com/llamaboot/llamaboot/internal/logfile"
)

// inst is one instance of a test config: its name and extra control keys.
type inst struct{ name, control string }

// supervisedConfig writes a config for the stand-in with global control
// keys and one table per instance; it returns the file and the ports.
func supervisedConfig(t *testing.T, dir, global string, insts ...inst) (string, []int) {
	t.Helper()
	ports := freePorts(t, len(insts))
	var b strings.Builder
	fmt.Fprintf(&b, "[master]\nllama_cpp_path = %q\n[instance.control]\nlog_dir = %q\n%s\n[instance.server]\nhost = \"127.0.0.1\"\n", standin, filepath.Join(dir, "logs"), global)
	for i, in := range insts {
		fmt.Fprintf(&b, "[instance.%s.control]\n%s\n[instance.%s.server]\nport = %d\n", in.name, in.control, in.name, ports[i])
	}
	return writeFile(t, filepath.Join(dir, "cfg.toml"), b.String()), ports
}

var standinLine = regexp.MustCompile(`^STANDIN_LINE (\d{8}) x+$`)

// numbered returns the numbers of the stand-in's numbered lines in text.
func numbered(text string) []int {
	var out []int
	for _, l := range strings.Split(text, "\n") {
		if m := standinLine.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			out = append(out, n)
		}
	}
	return out
}

// TestLogRotationKeepsEveryLine: a server writes 20 000 numbered lines (2 MB)
// as fast as it can into a log that rotates at 64 KiB; every line is in
// the files, once, in order, and no file is over the bound.
func TestLogRotationKeepsEveryLine(t *testing.T) {
	dir := t.TempDir()
	const n = 20000
	cfg, _ := supervisedConfig(t, dir, `log_max_size = "64KiB"`+"\nlog_max_files = 100", inst{"chatty", ""})
	app := filepath.Join(dir, "app")
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LINES=" + strconv.Itoa(n)})
	var last result
	waitFor(t, "the last numbered line through llamaboot logs", 60*time.Second, func() bool {
		last = runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "logs", "chatty", "--tail", "3")
		return strings.Contains(last.stdout, "STANDIN_LINES_DONE")
	})
	if m := regexp.MustCompile(`STANDIN_LINES_DONE \d+ in (\d+)ms`).FindStringSubmatch(last.stdout); m != nil {
		t.Logf("the server wrote %d lines (%d bytes each) in %s ms through the log pipe", n, 101, m[1])
	}
	path := filepath.Join(dir, "logs", "llama-server-chatty.log")
	var all strings.Builder
	files := 0
	for i := 99; i >= 0; i-- {
		b, err := os.ReadFile(logfile.Rotated(path, i))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 64<<10 {
			t.Errorf("%s is %d bytes, over log_max_size", logfile.Rotated(path, i), len(b))
		}
		files++
		all.Write(b)
	}
	if files < 10 {
		t.Errorf("%d files for 2 MB at 64 KiB each: rotation did not happen", files)
	}
	got := numbered(all.String())
	if len(got) != n {
		t.Errorf("%d numbered lines across %d files, want %d", len(got), files, n)
	}
	for i, v := range got {
		if v != i+1 {
			t.Fatalf("line %d is number %d: lost, doubled or reordered across a rotation", i+1, v)
		}
	}
	if strings.Contains(all.String(), "dropped") || strings.Contains(all.String(), "were lost") {
		t.Errorf("lines were dropped or lost")
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	e.wait(t, 15*time.Second)
}

// follower is a running `llamaboot logs -f`.
type follower struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
}

func startFollow(t *testing.T, app string, args ...string) *follower {
	t.Helper()
	f := &follower{lines: make(chan string, 100000), done: make(chan struct{})}
	f.cmd = exec.Command(llamaboot, append([]string{"logs", "-f"}, args...)...)
	f.cmd.Env = cleanEnv("AUTO_INFER_APP_DIR=" + app)
	out, err := f.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	f.cmd.Stderr = os.Stderr
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(f.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f.lines <- sc.Text()
		}
		f.cmd.Wait()
	}()
	t.Cleanup(func() {
		f.cmd.Process.Kill()
		<-f.done
	})
	return f
}

// next returns the follower's next line, failing the test after timeout.
func (f *follower) next(t *testing.T, timeout time.Duration) (string, bool) {
	t.Helper()
	select {
	case l, ok := <-f.lines:
		return l, ok
	case <-time.After(timeout):
		t.Fatalf("logs -f printed nothing for %s", timeout)
	}
	return "", false
}

// until reads lines until one starts with prefix.
func (f *follower) until(t *testing.T, prefix string) {
	t.Helper()
	for {
		l, ok := f.next(t, 20*time.Second)
		if !ok {
			t.Fatalf("logs -f ended before a line starting %q", prefix)
		}
		if strings.HasPrefix(l, prefix) {
			return
		}
	}
}

// TestLogsFollowAcrossRotations: `logs -f` keeps printing, with no line
// lost or doubled, while the log rotates many times under it.
func TestLogsFollowAcrossRotations(t *testing.T) {
	dir := t.TempDir()
	cfg, _ := supervisedConfig(t, dir, `log_max_size = "16KiB"`+"\nlog_max_files = 2", inst{"talky", ""})
	app := filepath.Join(dir, "app")
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg,
		"STANDIN_LINES=-1", "STANDIN_LINE_US=300"})
	e.waitOutput(t, `talky ready`, 20*time.Second)
	path := filepath.Join(dir, "logs", "llama-server-talky.log")
	f := startFollow(t, app, "talky", "--tail", "0")
	// 3000 lines of 101 bytes are 18 rotations at 16 KiB; with two files
	// kept, the first lines the follower saw are long gone from disk.
	var got []int
	for len(got) < 3000 {
		l, ok := f.next(t, 20*time.Second)
		if !ok {
			t.Fatalf("logs -f ended after %d lines", len(got))
		}
		got = append(got, numbered(l)...)
	}
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			t.Fatalf("logs -f went from line %d to %d", got[i-1], got[i])
		}
	}
	b, _ := os.ReadFile(logfile.Rotated(path, 1))
	if on := numbered(string(b)); len(on) == 0 || on[0] <= got[0] {
		t.Errorf("%s does not start after the first followed line %d: no rotation while following", logfile.Rotated(path, 1), got[0])
	}
	// Stopping the supervisor ends the follow (exit 0).
	e.cmd.Process.Signal(syscall.SIGTERM)
	e.wait(t, 15*time.Second)
	select {
	case <-f.done:
		if code := f.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("logs -f exited %d when the supervisor stopped", code)
		}
	case <-time.After(10 * time.Second):
		t.Error("logs -f still running after the supervisor stopped")
	}
}

// TestLogsAllAndStdout: `logs` without a name interleaves every instance
// with [name] prefixes; an unknown name is bad input; log_to_stdout copies
// only its instance's lines to entry's stdout.
func TestLogsAllAndStdout(t *testing.T) {
	dir := t.TempDir()
	cfg, _ := supervisedConfig(t, dir, "", inst{"alpha", "log_to_stdout = true"}, inst{"beta", ""})
	app := filepath.Join(dir, "app")
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=50"})
	e.waitOutput(t, `alpha ready`, 20*time.Second)
	e.waitOutput(t, `beta ready`, 20*time.Second)
	env := []string{"AUTO_INFER_APP_DIR=" + app}

	r := runLB(t, env, "logs")
	if r.code != 0 || !regexp.MustCompile(`(?m)^\[alpha\] STANDIN_ARGV`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^\[beta\] STANDIN_ARGV`).MatchString(r.stdout) {
		t.Errorf("logs without a name: %v", r)
	}
	r = runLB(t, env, "logs", "beta", "--tail", "2")
	if lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n"); r.code != 0 || len(lines) != 2 || strings.HasPrefix(r.stdout, "[beta]") {
		t.Errorf("logs beta --tail 2: %v", r)
	}
	r = runLB(t, env, "logs", "gamma")
	if r.code != 2 || !strings.Contains(r.stderr, `no instance "gamma" is supervised`) || !strings.Contains(r.stderr, "alpha") {
		t.Errorf("unknown instance: %v", r)
	}
	r = runLB(t, env, "logs", "--tail", "-1")
	if r.code != 2 {
		t.Errorf("negative --tail: %v", r)
	}

	out := e.out.String()
	if !regexp.MustCompile(`(?m)^\[alpha\] STANDIN_ARGV`).MatchString(out) || !strings.Contains(out, "[alpha] standin-llama-server: model loaded") {
		t.Errorf("alpha (log_to_stdout = true) not on entry's stdout:\n%s", out)
	}
	if strings.Contains(out, "[beta]") {
		t.Errorf("beta (log_to_stdout off) copied to stdout:\n%s", out)
	}

	// `logs -f` with no name follows both, prefixed.
	f := startFollow(t, app, "--tail", "1")
	f.next(t, 20*time.Second) // connected: a last line came
	runLB(t, env, "restart", "beta")
	f.until(t, "[beta] STANDIN_ARGV")
	e.cmd.Process.Signal(syscall.SIGTERM)
	e.wait(t, 15*time.Second)
}

// TestLogsFollowSeesReloads: `logs -f` picks up an instance a reload
// adds, and follows an instance onto its new log file; a follow of one
// instance ends (exit 0) when a reload removes it.
func TestLogsFollowSeesReloads(t *testing.T) {
	dir := t.TempDir()
	app, cfg, logs := filepath.Join(dir, "app"), filepath.Join(dir, "cfg.toml"), filepath.Join(dir, "logs")
	p := freePorts(t, 2)
	writeServers(t, cfg, logs, server{name: "a", port: p[0]})
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=50"})
	e.waitReady(t, "a")
	// Each prints a's last line once it is connected, and follows from there.
	all := startFollow(t, app, "--tail", "1")
	one := startFollow(t, app, "a", "--tail", "1")
	if l, _ := all.next(t, 20*time.Second); !strings.HasPrefix(l, "[a] ") {
		t.Fatalf("logs -f first printed %q", l)
	}
	one.next(t, 20*time.Second)
	moved := filepath.Join(dir, "moved", "a.log")
	writeServers(t, cfg, logs, server{name: "a", port: p[0], control: fmt.Sprintf("log_file = %q", moved)}, server{name: "b", port: p[1]})
	if r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "reload"); r.code != 0 {
		t.Fatal(r)
	}
	seen := map[string]bool{}
	for !seen["[b] [llamaboot]"] || !seen["[b] STANDIN_ARGV"] || !seen["[a] STANDIN_ARGV"] {
		l, ok := all.next(t, 20*time.Second)
		if !ok {
			t.Fatalf("logs -f ended; saw %v", seen)
		}
		for _, k := range []string{"[b] [llamaboot]", "[b] STANDIN_ARGV", "[a] STANDIN_ARGV"} {
			seen[k] = seen[k] || strings.HasPrefix(l, k)
		}
	}
	one.until(t, "STANDIN_ARGV") // a's new process
	b, _ := os.ReadFile(moved)
	if !strings.Contains(string(b), "STANDIN_ARGV") {
		t.Errorf("a's new log file %s: %q", moved, b)
	}
	writeServers(t, cfg, logs, server{name: "b", port: p[1]})
	if r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "reload"); r.code != 0 {
		t.Fatal(r)
	}
	select {
	case <-one.done:
		if code := one.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("logs -f a exited %d when a was removed", code)
		}
	case <-time.After(20 * time.Second):
		t.Error("logs -f a still running after a was removed")
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	e.wait(t, 15*time.Second)
}
