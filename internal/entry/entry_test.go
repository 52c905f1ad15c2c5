package entry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/control"
	"github.com/llamaboot/llamaboot/internal/install"
	"github.com/llamaboot/llamaboot/internal/supervise"
	"github.com/llamaboot/llamaboot/internal/testutil"
)

// The boot runs in-process: real signals (sent to the test process, which
// entry has asked to receive them) and real commands; the instances are
// fakes so no server is needed.

// fakeProc is an instance process that exits when signalled.
type fakeProc struct {
	pid        int
	ch         chan syscall.WaitStatus
	once       sync.Once
	ignoreTerm bool
}

func (p *fakeProc) PID() int                          { return p.pid }
func (p *fakeProc) Exited() <-chan syscall.WaitStatus { return p.ch }
func (p *fakeProc) Signal(sig syscall.Signal) error {
	if sig == syscall.SIGTERM && p.ignoreTerm {
		return nil
	}
	p.once.Do(func() { p.ch <- syscall.WaitStatus(sig) })
	return nil
}

type fakeStarter struct{ n atomic.Int64 }

func (s *fakeStarter) Start(spec config.Instance, out *os.File) (supervise.Process, error) {
	return &fakeProc{pid: 5000 + int(s.n.Add(1)), ch: make(chan syscall.WaitStatus, 1), ignoreTerm: strings.HasPrefix(spec.Name, "stubborn")}, nil
}

var fakes = supervise.Deps{
	Starter: &fakeStarter{},
	Probe: func(_ context.Context, _ config.Instance, _ int, report func(supervise.Probe)) {
		report(supervise.ProbeReady)
	},
	CheckPort: func(config.Instance) error { return nil },
}

type boot struct {
	out  *testutil.SyncBuffer
	done chan int
}

func start(t *testing.T, o Options) *boot {
	t.Helper()
	b := &boot{out: &testutil.SyncBuffer{}, done: make(chan int, 1)}
	if o.AppDir == "" {
		o.AppDir = t.TempDir()
	}
	o.Out, o.Err, o.Deps = b.out, b.out, fakes
	go func() { b.done <- Run(o) }()
	return b
}

func (b *boot) waitOutput(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(b.out.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in:\n%s", s, b.out)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (b *boot) wait(t *testing.T) int {
	t.Helper()
	select {
	case code := <-b.done:
		return code
	case <-time.After(20 * time.Second):
		t.Fatalf("entry did not return:\n%s", b.out)
	}
	return -1
}

func term(t *testing.T) {
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
}

func TestCommandStatus(t *testing.T) {
	for _, c := range []struct {
		cmd  []string
		want int
	}{
		{[]string{"sh", "-c", "exit 3"}, 3},
		{[]string{"sh", "-c", "kill -USR1 $$"}, 128 + int(syscall.SIGUSR1)},
		{[]string{"/nonexistent/cmd"}, ExitCmdNotFound},
	} {
		b := start(t, Options{Cmd: c.cmd})
		if code := b.wait(t); code != c.want {
			t.Errorf("%q: exit %d, want %d\n%s", c.cmd, code, c.want, b.out)
		}
	}
}

// A command that ignores SIGTERM is killed after the grace, and entry
// reports it as a shell would: 128+9.
func TestKilledCommandExits137(t *testing.T) {
	// The file says the trap is set: a SIGTERM before it would end the
	// shell at once (143), as a loaded machine showed.
	up := filepath.Join(t.TempDir(), "up")
	b := start(t, Options{Cmd: []string{"sh", "-c", `trap "" TERM; touch "$0"; while :; do sleep 0.05; done`, up}, Grace: 300 * time.Millisecond})
	b.waitOutput(t, "started sh")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(up); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the command never set its trap:\n%s", b.out)
		}
	}
	term(t)
	if code := b.wait(t); code != 137 {
		t.Errorf("exit %d, want 137\n%s", code, b.out)
	}
	if !strings.Contains(b.out.String(), "still running after 300ms: SIGKILL") {
		t.Errorf("no kill reported:\n%s", b.out)
	}
}

func writeConfig(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "cfg.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestServeOnBootThenStop(t *testing.T) {
	logs := t.TempDir()
	cfg := writeConfig(t, fmt.Sprintf("[master]\nllama_cpp_path = \"/bin/true\"\n[instance.control]\nlog_dir = %q\n[instance.a.server]\nport = 18001\n[instance.b.server]\nport = 18002\n", logs))
	app := t.TempDir()
	b := start(t, Options{AppDir: app, ServeOnBoot: true, ConfigPath: cfg, Self: "/usr/bin/llamaboot"})
	b.waitOutput(t, "a ready after")
	b.waitOutput(t, "b ready after")
	b.waitOutput(t, "no command given")
	st, err := control.GetStatus(control.SocketPath(app))
	if err != nil || len(st.Instances) != 2 || st.Instances[1].State != "ready" || st.Supervisor.AppDir != app {
		t.Fatalf("%+v %v", st, err)
	}
	if target, _ := os.Readlink(filepath.Join(install.InstallDir(app), "check-and-run-llama-cpp.sh")); target != "/usr/bin/llamaboot" {
		t.Errorf("entry point -> %q", target)
	}
	term(t)
	if code := b.wait(t); code != 0 {
		t.Errorf("exit %d\n%s", code, b.out)
	}
	out := b.out.String()
	for _, want := range []string{"a stopped (killed by SIGTERM)", "b stopped (killed by SIGTERM)", "stopped; exit status 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	// Every event was printed before the last line.
	if strings.Index(out, "b stopped") > strings.Index(out, "stopped; exit status") {
		t.Errorf("events after the final line:\n%s", out)
	}
	if _, err := os.Stat(control.SocketPath(app)); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

// An instance ignoring SIGTERM is killed after the grace, and with no
// command the exit status is 0.
func TestStubbornInstanceNoCommand(t *testing.T) {
	cfg := writeConfig(t, fmt.Sprintf("[master]\nllama_cpp_path = \"/bin/true\"\n[instance.control]\nlog_dir = %q\n[instance.stubborn.server]\nport = 18003\n", t.TempDir()))
	b := start(t, Options{ServeOnBoot: true, ConfigPath: cfg, Grace: 100 * time.Millisecond})
	b.waitOutput(t, "stubborn ready after")
	term(t)
	if code := b.wait(t); code != 0 || !strings.Contains(b.out.String(), "still running after 100ms: SIGKILL") {
		t.Errorf("exit %d\n%s", code, b.out)
	}
}

// Silent gating: a config or package given without its switch says what
// was not done and which variable does it.
func TestGatingIsSaid(t *testing.T) {
	b := start(t, Options{Cmd: []string{"true"}, ConfigPath: "/c.toml", PkgPath: "/p.tar.gz"})
	if code := b.wait(t); code != 0 {
		t.Fatal(code)
	}
	out := b.out.String()
	for _, want := range []string{
		"AUTO_INFER_LLAMA_CPP_CONFIG is set but AUTO_INFER_LLAMA_CPP_ON_BOOT is not: no server started at boot (set AUTO_INFER_LLAMA_CPP_ON_BOOT=1",
		"AUTO_INFER_LLAMA_CPP_PKG_PATH is set but AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT is not: nothing installed at boot (set AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT=1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	b = start(t, Options{Cmd: []string{"true"}, ServeOnBoot: true, GetPkgOnBoot: true})
	b.wait(t)
	for _, want := range []string{"AUTO_INFER_LLAMA_CPP_CONFIG is not set", "AUTO_INFER_LLAMA_CPP_PKG_PATH is not set"} {
		if !strings.Contains(b.out.String(), want) {
			t.Errorf("no %q in:\n%s", want, b.out)
		}
	}
}

type badInput struct{ error }

func (badInput) BadInput() bool { return true }

func TestInstallFailure(t *testing.T) {
	failing := func(context.Context, string) error { return badInput{errors.New("corrupt archive")} }
	b := start(t, Options{Cmd: []string{"true"}, GetPkgOnBoot: true, PkgPath: "/p", Install: failing})
	if code := b.wait(t); code != 0 || !strings.Contains(b.out.String(), "install of /p FAILED: corrupt archive") {
		t.Errorf("non-strict boots on: %d\n%s", code, b.out)
	}
	b = start(t, Options{Cmd: []string{"true"}, GetPkgOnBoot: true, PkgPath: "/p", Install: failing, Strict: true})
	if code := b.wait(t); code != 2 || strings.Contains(b.out.String(), "started true") {
		t.Errorf("strict: %d\n%s", code, b.out)
	}
	b = start(t, Options{GetPkgOnBoot: true, PkgPath: "/p", Strict: true,
		Install: func(context.Context, string) error { return errors.New("disk full") }})
	if code := b.wait(t); code != 1 {
		t.Errorf("strict, not bad input: %d\n%s", code, b.out)
	}
}

func TestStrictBadConfig(t *testing.T) {
	cfg := writeConfig(t, "[instance.a.server]\nport = 0\n")
	b := start(t, Options{Cmd: []string{"true"}, ServeOnBoot: true, ConfigPath: cfg, Strict: true})
	if code := b.wait(t); code != 2 || !strings.Contains(b.out.String(), "no server was started") {
		t.Errorf("%d\n%s", code, b.out)
	}
	missing := writeConfig(t, "[master]\nllama_cpp_path = \"/bin/true\"\n[instance.a.server]\nmodel = \"/nonexistent.gguf\"\n")
	b = start(t, Options{Cmd: []string{"true"}, ServeOnBoot: true, ConfigPath: missing})
	if code := b.wait(t); code != 0 || !strings.Contains(b.out.String(), "/nonexistent.gguf") {
		t.Errorf("non-strict missing model: %d\n%s", code, b.out)
	}
	off := writeConfig(t, "[master]\nenable = false\n[instance.a.server]\nport = 1\n")
	b = start(t, Options{Cmd: []string{"true"}, ServeOnBoot: true, ConfigPath: off})
	if code := b.wait(t); code != 0 || !strings.Contains(b.out.String(), "master.enable = false") {
		t.Errorf("disabled: %d\n%s", code, b.out)
	}
}

// SIGTERM during the boot install cancels it and ends the boot without
// starting anything, with 128+15 as if the signal had ended it; an install that ignores the cancel is abandoned after
// the grace period.
func TestStopDuringInstall(t *testing.T) {
	for _, c := range []struct {
		name    string
		honours bool
	}{{"cancelled", true}, {"abandoned", false}} {
		t.Run(c.name, func(t *testing.T) {
			called, cancelled := make(chan struct{}), make(chan struct{})
			release := make(chan struct{})
			defer close(release)
			stall := func(ctx context.Context, _ string) error {
				close(called)
				if !c.honours {
					<-release
					return nil
				}
				<-ctx.Done()
				close(cancelled)
				return ctx.Err()
			}
			b := start(t, Options{Cmd: []string{"true"}, GetPkgOnBoot: true, PkgPath: "/p", Install: stall, Grace: 200 * time.Millisecond})
			<-called
			term(t)
			if code := b.wait(t); code != 143 || strings.Contains(b.out.String(), "started true") {
				t.Errorf("%d\n%s", code, b.out)
			}
			if c.honours {
				<-cancelled
			} else if !strings.Contains(b.out.String(), "the install did not stop within 200ms") {
				t.Errorf("abandon not said:\n%s", b.out)
			}
		})
	}
}

// A command that cannot start ends the boot with 127 at once, and the
// instances already started (real processes, which only a reaping loop
// collects) are stopped and reaped first: Start has no Wait loop behind it.
func TestCommandNotFoundStopsRealInstances(t *testing.T) {
	for _, strict := range []bool{false, true} {
		t.Run(fmt.Sprintf("strict=%v", strict), func(t *testing.T) {
			dir := t.TempDir()
			server := filepath.Join(dir, "server")
			// A real child: only a reap ends its owner's wait.
			if err := os.WriteFile(server, []byte("#!/bin/sh\nexec sleep 1000\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			cfg := writeConfig(t, fmt.Sprintf("[master]\nllama_cpp_path = %q\n[instance.control]\nlog_dir = %q\nready_timeout = \"1h\"\n[instance.a.server]\nport = %d\n", server, dir, testutil.FreePort(t)))
			out := &testutil.SyncBuffer{}
			done := make(chan int, 1)
			go func() {
				done <- Run(Options{AppDir: t.TempDir(), Out: out, Err: out, ServeOnBoot: true, ConfigPath: cfg, Strict: strict,
					Cmd: []string{"/nonexistent/cmd"}, Grace: 200 * time.Millisecond})
			}()
			select {
			case code := <-done:
				if code != ExitCmdNotFound {
					t.Errorf("exit %d, want 127\n%s", code, out)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("entry did not return:\n%s", out)
			}
			if !strings.Contains(out.String(), "a stopped (killed by SIG") {
				t.Errorf("instance not reported stopped:\n%s", out)
			}
			if kids := supervise.Children(); len(kids) > 0 {
				t.Errorf("children left unreaped: %v", kids)
			}
		})
	}
}

// Under STRICT a missing llama-server is fatal before the command starts
// (exit 2, the config's line named); without STRICT the instance fails and
// the command runs.
func TestStrictMissingExecutable(t *testing.T) {
	cfg := writeConfig(t, fmt.Sprintf("[master]\nllama_cpp_path = \"/nonexistent/llama-server\"\n[instance.control]\nlog_dir = %q\n[instance.a.server]\nport = 18004\n", t.TempDir()))
	out := &testutil.SyncBuffer{}
	code := Run(Options{AppDir: t.TempDir(), Out: out, Err: out, ServeOnBoot: true, ConfigPath: cfg, Strict: true, Cmd: []string{"true"}})
	if code != ExitBadInput || strings.Contains(out.String(), "started true") || !strings.Contains(out.String(), "cfg.toml:2") {
		t.Errorf("strict: exit %d\n%s", code, out)
	}
	out = &testutil.SyncBuffer{}
	code = Run(Options{AppDir: t.TempDir(), Out: out, Err: out, ServeOnBoot: true, ConfigPath: cfg, Cmd: []string{"true"}})
	if code != 0 || !strings.Contains(out.String(), "started true") || !strings.Contains(out.String(), "a failed") {
		t.Errorf("not strict: exit %d\n%s", code, out)
	}
}
