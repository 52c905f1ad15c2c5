// Package entry is the container's boot sequence behind `llamaboot entry`:
// install the bundle if asked, put the helper entry points in place, start
// the configured instances if asked, run the container's command, and
// supervise all of it as PID 1 until the container stops.
package entry

import (
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/install"
	"github.com/llamaboot/llamaboot/internal/printer"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

// Options are what a boot needs; the CLI fills them from flags and the
// environment.
type Options struct {
	AppDir  string
	Getenv  func(string) string
	Environ []string // passed on to children
	Cmd     []string // the container's command, may be empty
	Self    string   // path of the llamaboot binary, for the entry points
	Out     io.Writer
	Err     io.Writer
	Grace   time.Duration // SIGTERM-to-SIGKILL budget for the whole stop
	Policy  supervise.Policy
	// InstallOptions lets the CLI pass its installer settings.
	InstallOptions func(source string) install.Options
}

// Exit statuses.
const (
	exitFailure  = 1
	exitBadInput = 2
)

// forwarded are the signals passed on to the container's command.
var forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// Switch reads a boolean variable as the old scripts did: 1/true (any case)
// is on; 0/false/empty is off; anything else is off with a warning.
func Switch(getenv func(string) string, name string, p *printer.Printer) bool {
	v := strings.TrimSpace(getenv(name))
	switch strings.ToLower(v) {
	case "1", "true":
		return true
	case "", "0", "false":
		return false
	}
	p.Warnf("%s=%q is neither 1/true nor 0/false; treating it as false", name, v)
	return false
}

// Run boots and supervises until the container should stop, and returns
// the exit status.
func Run(o Options) int {
	p := printer.New(o.Out, o.Err, "[llamaboot]", false)
	if o.Grace == 0 {
		o.Grace = config.DefaultStopTimeout
	}
	// Catch signals before starting anything, so none is lost.
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, append([]os.Signal{syscall.SIGCHLD}, forwarded...)...)
	defer signal.Stop(sigs)
	if os.Getpid() != 1 {
		// Outside a container (and in tests) orphans of our children must
		// still come to us to be reaped.
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			p.Warnf("cannot become a child subreaper: %v", err)
		}
	}
	strict := Switch(o.Getenv, "AUTO_INFER_LLAMA_CPP_STRICT", p)

	// 1. Install the bundle.
	if Switch(o.Getenv, "AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT", p) {
		if src := o.Getenv("AUTO_INFER_LLAMA_CPP_PKG_PATH"); src == "" {
			p.Stepf("AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT is on but AUTO_INFER_LLAMA_CPP_PKG_PATH is not set: no install")
		} else if sig, err := interruptible(sigs, func(ctx context.Context) error {
			_, err := install.Install(ctx, o.InstallOptions(src))
			return err
		}); sig != nil {
			p.Errorf("install of %s stopped by %s: %v", src, sig, err)
			return 128 + int(sig.(syscall.Signal))
		} else if err != nil {
			p.Errorf("install of %s FAILED: %v", src, err)
			if strict {
				p.Errorf("AUTO_INFER_LLAMA_CPP_STRICT=1: stopping before the command starts")
				return statusOf(err)
			}
			p.Errorf("booting on with the previously installed bundle, if any")
		}
	}

	// 2. The old helper names, as links to this binary.
	dir := install.InstallDir(o.AppDir)
	if err := os.MkdirAll(dir, 0o755); err == nil {
		if err := install.EnsureEntryPoints(dir, o.Self, install.EntryPointNames); err != nil {
			p.Warnf("%v", err)
		}
	}

	reaper := supervise.NewReaper()
	sup := supervise.New(reaper, p, o.Policy, o.Environ)
	started := time.Now()
	var cmdPID int
	srv := &supervise.Server{Sup: sup,
		Info: func() supervise.SupervisorInfo {
			return supervise.SupervisorInfo{PID: os.Getpid(), UptimeS: time.Since(started).Round(time.Millisecond).Seconds(),
				Cmd: o.Cmd, CmdPID: cmdPID, Socket: supervise.SocketPath(o.AppDir), AppDir: o.AppDir, Instance: len(sup.Statuses())}
		},
		Bundle: func() any {
			m, err := install.ReadMarker(dir)
			if err != nil {
				return nil
			}
			return m
		},
	}
	if err := srv.Listen(supervise.SocketPath(o.AppDir)); err != nil {
		p.Warnf("status socket unavailable: %v", err)
	}
	defer srv.Close()

	// 3. Serve on boot.
	if Switch(o.Getenv, "AUTO_INFER_LLAMA_CPP_ON_BOOT", p) {
		if cfg := o.Getenv("AUTO_INFER_LLAMA_CPP_CONFIG"); cfg == "" {
			p.Stepf("AUTO_INFER_LLAMA_CPP_ON_BOOT is on but AUTO_INFER_LLAMA_CPP_CONFIG is not set: no server started")
		} else if err := startInstances(sup, p, cfg, o); err != nil {
			if strict {
				p.Errorf("AUTO_INFER_LLAMA_CPP_STRICT=1: stopping before the command starts")
				return statusOf(err)
			}
		}
	}

	// 4. The container's command.
	var cmdExit <-chan syscall.WaitStatus
	var cmdProc *os.Process
	if len(o.Cmd) > 0 {
		cmd, ch, err := sup.StartCmd(o.Cmd)
		if err != nil {
			p.Errorf("cannot start %s: %v", o.Cmd[0], err)
			sup.StopAll(o.Grace)
			return 127
		}
		cmdExit, cmdProc, cmdPID = ch, cmd.Process, cmd.Process.Pid
		p.Stepf("started %s (pid %d)", strings.Join(o.Cmd, " "), cmdPID)
	} else {
		p.Stepf("no command given: supervising until stopped (docker stop, SIGTERM)")
	}

	code := 0
	stopped := make(chan struct{})
	stopping := false
	stop := func(why string) {
		if stopping {
			return
		}
		stopping = true
		p.Stepf("stopping (%s): SIGTERM to everything, SIGKILL after %s", why, o.Grace)
		go func() {
			defer close(stopped)
			deadline := time.Now().Add(o.Grace)
			if cmdProc != nil && cmdExit != nil {
				_ = cmdProc.Signal(syscall.SIGTERM)
			}
			sup.StopAll(o.Grace)
			if cmdProc != nil && cmdExit != nil {
				for time.Now().Before(deadline) && cmdProc.Signal(syscall.Signal(0)) == nil {
					time.Sleep(20 * time.Millisecond)
				}
				_ = cmdProc.Signal(syscall.SIGKILL)
			}
		}()
	}

	for {
		select {
		case sig := <-sigs:
			switch sig {
			case syscall.SIGCHLD:
				reaper.Reap()
			case syscall.SIGTERM, syscall.SIGINT:
				stop("got " + sig.String())
			default:
				if cmdProc != nil && cmdExit != nil {
					_ = cmdProc.Signal(sig)
				}
			}
		case ws := <-cmdExit:
			cmdExit = nil
			code = supervise.ExitCode(ws)
			p.Stepf("command exited with status %d", code)
			stop("the command exited")
		case <-stopped:
			killStragglers(reaper)
			p.Stepf("stopped; exit status %d", code)
			return code
		}
	}
}

// interruptible runs a boot step that may take long (a download) so that
// SIGTERM or SIGINT cancels it: docker stop must not wait for it. It
// returns the stop signal if one came; other signals are queued again for
// the supervision loop.
func interruptible(sigs chan os.Signal, step func(context.Context) error) (os.Signal, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- step(ctx) }()
	var stop os.Signal
	var other []os.Signal
	for {
		select {
		case err := <-done:
			for _, s := range other {
				select {
				case sigs <- s:
				default: // full: the loop has plenty to act on already
				}
			}
			return stop, err
		case sig := <-sigs:
			if (sig == syscall.SIGTERM || sig == syscall.SIGINT) && stop == nil {
				stop = sig
				cancel()
			} else if sig != syscall.SIGTERM && sig != syscall.SIGINT {
				other = append(other, sig)
			}
		}
	}
}

func startInstances(sup *supervise.Supervisor, p *printer.Printer, path string, o Options) error {
	plan, err := config.Load(path, config.Options{AppDir: o.AppDir, Overrides: o.Getenv("AUTO_INFER_LLAMA_CPP_OVERRIDES")})
	if err != nil {
		p.Errorf("%v", err)
		p.Errorf("no server was started")
		return err
	}
	for _, w := range plan.Warnings {
		p.Warnf("%s", w)
	}
	if err := plan.Runnable(); err != nil {
		p.Errorf("%v", err)
		p.Errorf("no server was started")
		return err
	}
	if !plan.Enabled {
		p.Stepf("%s: master.enable = false: no server started", path)
		return nil
	}
	for _, in := range plan.Instances {
		if err := sup.Add(in); err != nil {
			p.Errorf("%s: %v", in.Name, err)
		}
	}
	return nil
}

// killStragglers kills and reaps whatever children are left (processes
// that left their group, orphans re-parented to us).
func killStragglers(r *supervise.Reaper) {
	for _, pid := range supervise.Children() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	time.Sleep(10 * time.Millisecond)
	r.Reap()
}

func statusOf(err error) int {
	var bad interface{ BadInput() bool }
	if errors.As(err, &bad) && bad.BadInput() {
		return exitBadInput
	}
	return exitFailure
}
