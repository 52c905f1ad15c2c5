// Package entry is the container's boot sequence behind `llamaboot entry`:
// install the bundle if asked, put the helper entry points in place, start
// the configured instances if asked, run the container's command, and
// supervise all of it as PID 1 until the container stops. It reads no
// environment: the CLI hands it everything in Options.
package entry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/llamaboot/llamaboot/internal/access"
	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/control"
	"github.com/llamaboot/llamaboot/internal/dirs"
	"github.com/llamaboot/llamaboot/internal/install"
	"github.com/llamaboot/llamaboot/internal/launch"
	"github.com/llamaboot/llamaboot/internal/logfile"
	"github.com/llamaboot/llamaboot/internal/metrics"
	"github.com/llamaboot/llamaboot/internal/models"
	"github.com/llamaboot/llamaboot/internal/preflight"
	"github.com/llamaboot/llamaboot/internal/printer"
	"github.com/llamaboot/llamaboot/internal/router"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

// Options are what a boot needs; the CLI fills them from flags and the
// environment (read once, there).
type Options struct {
	AppDir  string
	Environ []string // passed on to children
	Cmd     []string // the container's command, may be empty
	Self    string   // path of the llamaboot binary, for the entry points
	Out     io.Writer
	Err     io.Writer
	Grace   time.Duration // SIGTERM-to-SIGKILL budget for the whole stop
	Policy  supervise.Policy
	Deps    supervise.Deps // zero: real processes (tests pass fakes)
	Strict  bool           // AUTO_INFER_LLAMA_CPP_STRICT: a failed install or bad config is fatal
	// Listen is where to serve /livez, /readyz and /metrics (entry
	// --listen, AUTO_INFER_LLAMA_CPP_METRICS_ADDR); "" serves nothing.
	Listen string

	// Boot install: AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT and …_PKG_PATH.
	GetPkgOnBoot bool
	PkgPath      string
	// Install installs source; ctx is cancelled when the container is
	// stopped during the install.
	Install func(ctx context.Context, source string) error

	// Serving on boot: AUTO_INFER_LLAMA_CPP_ON_BOOT and …_CONFIG, loaded
	// with Config (app dir, overrides, models dir, flag check, strict) as
	// `run` loads it.
	ServeOnBoot bool
	ConfigPath  string
	Config      config.Options
	// Watch (entry --watch, AUTO_INFER_LLAMA_CPP_WATCH) reloads the config
	// served when its content changes, polled every WatchEvery.
	Watch      bool
	WatchEvery time.Duration
	// Models are the settings of model downloads (the printer is entry's).
	Models models.Options
}

// Exit statuses, mapped here and nowhere else.
const (
	ExitOK          = 0
	ExitFailure     = 1
	ExitBadInput    = 2
	ExitCmdNotFound = 127 // the command could not be started, as a shell says
)

// forwarded are the signals passed on to the container's command.
var forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// Entry is one boot: Start it, Wait for the end, Close.
type Entry struct {
	o       Options
	p       *printer.Printer
	sigs    chan os.Signal
	reaper  *supervise.Reaper
	sup     *supervise.Supervisor
	srv     *control.Server
	metrics *metrics.Server
	printed chan struct{} // closed when the event printer has printed everything
	began   time.Time

	installTook time.Duration // the boot install's, when one ran

	cmdProc *os.Process
	cmdExit <-chan syscall.WaitStatus
	cmdPID  atomic.Int64 // read by the status socket

	reloader *supervise.Reloader // nil unless a config is served
	unwatch  func()              // stops the config watch

	stopAsked bool           // SIGTERM/SIGINT came during the install
	stopSig   syscall.Signal // which

	boot atomic.Pointer[modelBoot] // instances waiting for model downloads

	// Readiness of the supervisor itself: booting says which boot step
	// is under way (nil once the boot is over); noInstances why a
	// supervisor asked to serve a config has none.
	booting     atomic.Pointer[string]
	noInstances atomic.Pointer[string]
	held        *heldReload  // between a reload's Load and After (the Reloader runs one at a time)
	next        *config.Plan // the plan a reload loaded, for the router once applied

	routerMu      sync.Mutex
	routing       *routing // nil unless the config has a [router]
	routerMetrics *router.Metrics
}

// New prepares a boot; nothing happens until Start.
func New(o Options) *Entry {
	e := newEntry(o)
	e.setBooting("installing the bundle")
	return e
}

func newEntry(o Options) *Entry {
	if o.Grace == 0 {
		o.Grace = config.DefaultStopTimeout
	}
	// Our lines and the log_to_stdout copies share stdout a line at a time.
	o.Out = logfile.Locked(o.Out)
	if o.Deps.Stdout == nil {
		o.Deps.Stdout = o.Out
	}
	return &Entry{o: o, p: printer.New(o.Out, o.Err, "[llamaboot]", false), began: time.Now()}
}

// Run boots, supervises until the container should stop, and returns the
// exit status.
func Run(o Options) int {
	e := New(o)
	defer e.Close()
	if code, err := e.Start(); err != nil {
		return code
	}
	return e.Wait()
}

// Start installs, starts the supervisor, the instances and the command.
// An error means the boot ends here with the returned status (strict mode,
// a command that cannot start, or a stop during the install).
func (e *Entry) Start() (int, error) {
	// Catch signals before starting anything, so none is lost.
	e.sigs = make(chan os.Signal, 32)
	signal.Notify(e.sigs, append([]os.Signal{syscall.SIGCHLD}, forwarded...)...)
	if os.Getpid() != 1 {
		// Outside a container (and in tests) orphans of our children must
		// still come to us to be reaped.
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			e.p.Warnf("cannot become a child subreaper: %v", err)
		}
	}

	// 1. Install the bundle.
	if err := e.installOnBoot(); err != nil {
		return statusOf(err), err
	}
	if e.stopAsked {
		// As if the signal had ended the boot, the way a shell reports it.
		return 128 + int(e.stopSig), errStopped
	}

	// 2. The old helper names, as links to this binary.
	dir := install.InstallDir(e.o.AppDir)
	if err := dirs.MkdirAll(dir, 0o755); err == nil {
		if err := install.EnsureEntryPoints(dir, e.o.Self, install.EntryPointNames); err != nil {
			e.p.Warnf("%v", err)
		}
	}

	// 3. The supervisor, its event printer, its record of what it runs
	// (after stopping what a previous one left running) and its socket.
	e.stopSurvivors()
	e.reaper = supervise.NewReaper()
	e.sup = supervise.New(e.reaper, e.o.Policy, e.o.Environ, e.o.Deps)
	events, _ := e.sup.Subscribe()
	e.printed = make(chan struct{})
	go func() {
		defer close(e.printed)
		supervise.Print(e.p, events)
	}()
	recorded, _ := e.sup.Subscribe()
	go e.recordSupervised(recorded)
	sock := control.SocketPath(e.o.AppDir)
	e.srv = &control.Server{Sup: e.sup,
		Info: func() control.SupervisorInfo {
			return control.SupervisorInfo{PID: os.Getpid(), UptimeS: control.Seconds(time.Since(e.began)),
				Cmd: e.o.Cmd, CmdPID: int(e.cmdPID.Load()), Socket: sock, AppDir: e.o.AppDir, Instance: len(e.sup.Snapshots())}
		},
		Bundle: func() any {
			m, err := install.ReadMarker(dir)
			if err != nil {
				return nil
			}
			return m
		},
		Pending: e.pending,
		Downloads: func() any {
			if b := e.boot.Load(); b != nil && b.fetcher.Needs() {
				return b.downloads()
			}
			return nil
		},
		Router:          e.routerStatus,
		OperatorStopped: e.operatorStopped,
	}
	e.routerMetrics = router.NewMetrics()
	if e.serving() {
		e.reloader = &supervise.Reloader{Sup: e.sup, Load: e.loadDesired, After: e.afterReload, P: e.p}
		e.srv.Reloader = e.reloader
		e.setBooting("loading " + e.o.ConfigPath + " and starting its instances")
		e.setNoInstances(e.o.ConfigPath + " has no enabled instance")
	} else {
		e.setBooting("")
	}
	e.srv.NotReady = e.notReady
	if err := e.srv.Listen(sock); err != nil {
		e.p.Warnf("status socket unavailable: %v", access.Explain(err, access.AppDir))
	}
	if err := e.serveMetrics(dir); err != nil && e.o.Strict {
		e.p.Errorf("AUTO_INFER_LLAMA_CPP_STRICT=1: stopping before the command starts")
		return ExitFailure, err
	}

	// 4. Serve on boot (and watch for changes from what is loaded now).
	loaded := e.configSum()
	err := e.serveOnBoot()
	e.setBooting("")
	if errors.Is(err, errStopped) {
		e.stopAllNow()
		return 128 + int(e.stopSig), err
	} else if err != nil && e.o.Strict {
		e.p.Errorf("AUTO_INFER_LLAMA_CPP_STRICT=1: stopping before the command starts")
		e.stopAllNow()
		return statusOf(err), err
	}
	e.startWatch(loaded)

	// 5. The container's command.
	if len(e.o.Cmd) > 0 {
		cmd, ch, err := e.sup.StartCmd(e.o.Cmd)
		if err != nil {
			e.p.Errorf("cannot start %s: %v", e.o.Cmd[0], err)
			e.stopAllNow()
			return ExitCmdNotFound, err
		}
		e.cmdExit, e.cmdProc = ch, cmd.Process
		e.cmdPID.Store(int64(cmd.Process.Pid))
		e.p.Stepf("started %s (pid %d)", strings.Join(e.o.Cmd, " "), cmd.Process.Pid)
	} else {
		e.p.Stepf("no command given: supervising until stopped (docker stop, SIGTERM)")
	}
	return ExitOK, nil
}

var errStopped = errors.New("stopped during boot")

// stopAllNow stops every instance when the boot ends inside Start. Only a
// loop answering SIGCHLD reaps, and the owners wait for their processes'
// statuses, so this one reaps until the stop is over (Wait's loop does the
// same for a normal stop).
func (e *Entry) stopAllNow() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.stopRouter()
		e.sup.StopAll(e.o.Grace)
	}()
	for {
		select {
		case <-done:
			e.killStragglers()
			e.flushEvents()
			return
		case sig := <-e.sigs:
			if sig == syscall.SIGCHLD {
				e.reaper.Reap()
			}
		}
	}
}

// installOnBoot runs the boot install while still answering signals: a
// SIGTERM cancels it, and if it does not stop within the grace period it
// is abandoned (installs are crash-safe: the old bundle stays active and a
// partial download is kept for the next boot).
func (e *Entry) installOnBoot() error {
	switch {
	case !e.o.GetPkgOnBoot && e.o.PkgPath != "":
		e.p.Stepf("AUTO_INFER_LLAMA_CPP_PKG_PATH is set but AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT is not: nothing installed at boot (set AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT=1 to install %s)", install.Shown(e.o.PkgPath))
		return nil
	case !e.o.GetPkgOnBoot:
		return nil
	case e.o.PkgPath == "":
		e.p.Stepf("AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT is on but AUTO_INFER_LLAMA_CPP_PKG_PATH is not set: no install")
		return nil
	}
	began := time.Now()
	abandoned, err := e.cancellable("the install", func(ctx context.Context) error { return e.o.Install(ctx, e.o.PkgPath) })
	if abandoned {
		e.p.Warnf("the install did not stop within %s; leaving it unfinished (the previous bundle stays active)", e.o.Grace)
		return nil
	}
	e.installTook = time.Since(began)
	if e.stopAsked {
		e.p.Errorf("install of %s stopped by %s: %v", install.Shown(e.o.PkgPath), unix.SignalName(e.stopSig), err)
		return nil
	}
	if err != nil {
		e.p.Errorf("install of %s FAILED: %v", install.Shown(e.o.PkgPath), err)
		if e.o.Strict {
			e.p.Errorf("AUTO_INFER_LLAMA_CPP_STRICT=1: stopping before the command starts")
			return err
		}
		e.p.Errorf("booting on with the previously installed bundle, if any")
	}
	return nil
}

// cancellable runs a long boot step (the install, STRICT's model
// downloads) while still answering signals: SIGTERM or SIGINT cancels it
// and marks the boot as stopping; if it does not stop within the grace
// period it is abandoned (both steps are crash-safe).
func (e *Entry) cancellable(what string, step func(context.Context) error) (abandoned bool, err error) {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	done := make(chan error, 1)
	go func() { done <- step(ctx) }()
	var abandon <-chan time.Time
	for {
		select {
		case err = <-done:
			return false, err
		case sig := <-e.sigs:
			if (sig == syscall.SIGTERM || sig == syscall.SIGINT) && !e.stopAsked {
				e.stopAsked, e.stopSig = true, sig.(syscall.Signal)
				e.p.Stepf("got %s during %s: cancelling it; nothing else starts", unix.SignalName(e.stopSig), what)
				cancel(SignalError{e.stopSig})
				abandon = time.After(e.o.Grace)
			}
			// SIGCHLD: the reaper collects later.
		case <-abandon:
			return true, nil
		}
	}
}

func (e *Entry) serveOnBoot() error {
	switch {
	case !e.o.ServeOnBoot && e.o.ConfigPath != "":
		e.p.Stepf("AUTO_INFER_LLAMA_CPP_CONFIG is set but AUTO_INFER_LLAMA_CPP_ON_BOOT is not: no server started at boot (set AUTO_INFER_LLAMA_CPP_ON_BOOT=1 to start the instances of %s)", e.o.ConfigPath)
		return nil
	case !e.o.ServeOnBoot:
		return nil
	case e.o.ConfigPath == "":
		e.p.Stepf("AUTO_INFER_LLAMA_CPP_ON_BOOT is on but AUTO_INFER_LLAMA_CPP_CONFIG is not set: no server started")
		e.setNoInstances("AUTO_INFER_LLAMA_CPP_CONFIG is not set: set it to the instance file to serve")
		return nil
	}
	plan, err := e.load()
	if plan != nil {
		for _, w := range plan.Warnings {
			e.p.Warnf("%s", w)
		}
	}
	if err != nil {
		e.p.Errorf("%v", err)
		e.p.Errorf("no server was started")
		e.setNoInstances(fmt.Sprintf("%s did not load (%s): no server was started; fix it and run llamaboot reload", e.o.ConfigPath, oneLine(err)))
		return err
	}
	mo := e.o.Models
	mo.Printer = printer.New(e.o.Out, e.o.Err, "[models]", false)
	b := newModelBoot(plan, e.sup, e.p, mo)
	now := withoutDownloads(plan) // the others start when their files are there
	if !plan.Enabled {
		e.p.Stepf("%s: master.enable = false: no server started", e.o.ConfigPath)
		e.setNoInstances(e.o.ConfigPath + ": master.enable = false: no server is started")
		return nil
	}
	if e.o.Strict {
		// An executable that is not there is as fatal as a bad config.
		if err := launch.MissingExecutables(plan.Instances, e.o.Environ); err != nil {
			e.p.Errorf("%v", err)
			e.p.Errorf("no server was started")
			return err
		}
	}
	// A bundle that will not load, or would serve on the CPU when a GPU is
	// asked for, is said before anything starts; fatal under STRICT.
	if fs := preflight.Instances(context.Background(), plan.Instances, e.o.Environ, preflight.System{}); len(fs) > 0 {
		for _, f := range fs {
			if e.o.Strict {
				e.p.Errorf("preflight: instance %s: %s", f.Instance, f)
			} else {
				e.p.Warnf("preflight: instance %s: %s", f.Instance, f)
			}
		}
		if e.o.Strict {
			e.p.Errorf("no server was started (llamaboot doctor says the same)")
			return errors.New("the preflight found problems")
		}
	}
	e.boot.Store(b)
	if e.o.Strict && b.fetcher.Needs() {
		// STRICT: every model is fetched before anything starts, and a
		// failure is fatal.
		abandoned, err := e.cancellable("the model downloads", func(ctx context.Context) error {
			if failed := b.runNow(ctx); len(failed) > 0 {
				return modelsFailed(failed)
			}
			return nil
		})
		if e.stopAsked || abandoned {
			e.p.Errorf("stopped by %s while downloading models", unix.SignalName(e.stopSig))
			return errStopped
		}
		if err != nil {
			e.p.Errorf("%v", err)
			e.p.Errorf("no server was started")
			return err
		}
	}
	if _, err := e.sup.Apply(now.Instances); err != nil {
		return err
	}
	if err := e.routeBy(plan); err != nil {
		return err
	}
	if e.o.Strict {
		b.handOver()
	} else if b.fetcher.Needs() {
		b.start()
	}
	return nil
}

func (e *Entry) setBooting(step string) {
	if step == "" {
		e.booting.Store(nil)
		return
	}
	why := "booting: " + step
	e.booting.Store(&why)
}

func (e *Entry) setNoInstances(why string) { e.noInstances.Store(&why) }

// notReady says why the supervisor itself is not ready: its boot is under
// way, or it serves a config and has no instance (one still downloading
// its model counts as an instance).
func (e *Entry) notReady(instances int) string {
	if w := e.booting.Load(); w != nil {
		return *w
	}
	// Serving was asked (ON_BOOT), whether or not a config was named.
	if instances == 0 && e.o.ServeOnBoot {
		if w := e.noInstances.Load(); w != nil {
			return "AUTO_INFER_LLAMA_CPP_ON_BOOT=1 but no instance is supervised: " + *w
		}
	}
	return ""
}

// oneLine is err on one line, its lines joined, cut at 300 bytes: a
// health check's reason.
func oneLine(err error) string {
	var parts []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, strings.TrimSuffix(l, ":"))
		}
	}
	s := strings.Join(parts, ": ")
	if len(s) > 300 {
		s = s[:297] + "..."
	}
	return s
}

// modelsFailed is the failure of a boot's model downloads, one line per
// instance; bad input when any is.
type modelsFailed map[string]error

func (m modelsFailed) Error() string {
	return "model downloads failed:\n" + strings.TrimRight(models.Summary(m), "\n")
}

func (m modelsFailed) BadInput() bool { return models.BadInput(m) }

// Wait supervises until the command exits or a stop signal comes, stops
// everything within the grace period and returns the exit status: the
// command's (128+signal when a signal ended it, as a shell reports it), or
// 0 without a command.
func (e *Entry) Wait() int {
	code := ExitOK
	stopped := make(chan struct{})
	cmdDone := make(chan struct{})
	if e.cmdExit == nil {
		close(cmdDone)
	}
	stopping := false
	stop := func(why string) {
		if stopping {
			return
		}
		stopping = true
		e.p.Stepf("stopping (%s): SIGTERM to everything, SIGKILL after %s", why, e.o.Grace)
		go func() {
			defer close(stopped)
			deadline := time.NewTimer(e.o.Grace)
			defer deadline.Stop()
			if e.cmdExit != nil {
				_ = e.cmdProc.Signal(syscall.SIGTERM)
			}
			if b := e.boot.Load(); b != nil {
				b.stop() // downloads end; their .part files stay for the next boot
			}
			e.stopRouter()
			e.sup.StopAll(e.o.Grace)
			if e.cmdExit == nil {
				return
			}
			e.awaitCommand(cmdDone, deadline.C)
		}()
	}
	cmdExit := e.cmdExit
	done := stopped
	for {
		select {
		case sig := <-e.sigs:
			switch sig {
			case syscall.SIGCHLD:
				e.reaper.Reap()
			case syscall.SIGTERM, syscall.SIGINT:
				stop("got " + unix.SignalName(sig.(syscall.Signal)))
			case syscall.SIGHUP:
				// Still the command's too, as before.
				if cmdExit != nil {
					_ = e.cmdProc.Signal(sig)
				}
				if !stopping {
					e.reloadInBackground("SIGHUP")
				}
			default:
				if cmdExit != nil {
					_ = e.cmdProc.Signal(sig)
				}
			}
		case ws := <-cmdExit:
			cmdExit = nil
			close(cmdDone)
			code = supervise.ExitCode(ws)
			e.p.Stepf("command exited with status %d", code)
			stop("the command exited")
		case <-done:
			done = nil
		}
		// Done once everything stopped and the command's status (killed
		// after the grace, maybe) has come in.
		if done == nil && cmdExit == nil {
			e.killStragglers()
			e.flushEvents()
			e.p.Stepf("stopped; exit status %d", code)
			return code
		}
	}
}

// awaitCommand waits for the command's exit (cmdDone) until the grace
// period ends (deadline), then SIGKILLs it, saying so only when the signal
// reached a live process. The deadline may pass while the instances stop,
// after the command exited: its status is in (both are ready then, and
// select picks either), it is a zombie not reaped yet, or it was reaped
// and the signal finds nothing (ESRCH). Then nothing is said.
func (e *Entry) awaitCommand(cmdDone <-chan struct{}, deadline <-chan time.Time) {
	select {
	case <-cmdDone:
		return
	case <-deadline:
	}
	select {
	case <-cmdDone:
		return // exited meanwhile
	default:
	}
	if _, running := procStart(e.cmdProc.Pid); !running {
		return // exited, not reaped yet (a zombie), or gone
	}
	if e.cmdProc.Signal(syscall.SIGKILL) != nil {
		return // not delivered: it had exited
	}
	e.p.Stepf("command (pid %d) still running after %s: SIGKILL", e.cmdProc.Pid, e.o.Grace)
}

// flushEvents prints every event still queued.
func (e *Entry) flushEvents() {
	if e.sup != nil {
		e.sup.CloseEvents()
		<-e.printed
	}
}

// Close releases what Start took: the socket, signal delivery.
func (e *Entry) Close() {
	if e.unwatch != nil {
		e.unwatch()
	}
	if e.srv != nil {
		e.srv.Close()
	}
	if e.metrics != nil {
		e.metrics.Close()
	}
	e.stopRouter()
	e.flushEvents()
	if e.sigs != nil {
		signal.Stop(e.sigs)
	}
}

// killStragglers kills and reaps whatever children are left (processes
// that left their group, orphans re-parented to us).
func (e *Entry) killStragglers() {
	left := supervise.Children()
	for _, pid := range left {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// Reap them as they die (a SIGKILLed process takes a moment to become
	// a zombie), not after a guessed sleep; one the kernel cannot kill
	// does not hold the exit up for more than a second.
	for deadline := time.Now().Add(time.Second); len(left) > 0 && time.Now().Before(deadline); left = supervise.Children() {
		e.reaper.Reap()
		if len(supervise.Children()) == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	e.reaper.Reap()
}

func statusOf(err error) int {
	var bad interface{ BadInput() bool }
	if errors.As(err, &bad) && bad.BadInput() {
		return ExitBadInput
	}
	return ExitFailure
}

// SignalError is why a boot step was cancelled: the signal, said by name
// instead of "context canceled" (it still matches context.Canceled).
type SignalError struct{ Sig syscall.Signal }

func (e SignalError) Error() string { return unix.SignalName(e.Sig) + " received" }

func (e SignalError) Is(target error) bool { return target == context.Canceled }
