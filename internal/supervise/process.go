package supervise

import (
	"context"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/launch"
	"github.com/llamaboot/llamaboot/internal/logfile"
	"github.com/llamaboot/llamaboot/internal/proc"
)

// Process is a started server process, as its owner sees it.
type Process interface {
	PID() int
	// Exited receives the wait status once, from the reaper.
	Exited() <-chan syscall.WaitStatus
	// Signal signals the process's whole group.
	Signal(syscall.Signal) error
}

// Starter starts an instance's process with out as its stdout and stderr.
// Tests pass a fake; production uses the reaper.
type Starter interface {
	Start(spec config.Instance, out *os.File) (Process, error)
}

// Clock is time as the supervisor sees it; tests advance a fake one.
type Clock interface {
	Now() time.Time
	After(time.Duration) <-chan time.Time
}

// Prober watches a started process's readiness and reports it through
// report until ctx ends (liveness is the watchdog's). It must not signal
// the process: only the owner does.
type Prober func(ctx context.Context, spec config.Instance, pid int, report func(Probe))

// Probe is one probe finding.
type Probe int

const (
	ProbeReady Probe = iota // /health 200 from our process
)

// Deps are the supervisor's links to the outside world. Zero fields take
// the real thing.
type Deps struct {
	Starter  Starter
	Clock    Clock
	Probe    Prober
	Liveness Liveness  // the watchdog's probe
	Slots    BusySlots // the drain's question
	// Usage is what the threads of the server whose process group pid
	// leads did (false: none is left): the watchdog's sign of work.
	Usage     func(pid int) (proc.Usage, bool)
	CheckPort func(config.Instance) error // nil error: free
	// Stdout takes the [name]-prefixed copies of log_to_stdout instances;
	// one writer shared by all, serialised per line (logfile.Locked).
	Stdout io.Writer
}

func (d Deps) withDefaults(r *Reaper, env []string) Deps {
	if d.Starter == nil {
		d.Starter = &execStarter{reaper: r, env: env}
	}
	if d.Clock == nil {
		d.Clock = realClock{}
	}
	if d.Probe == nil {
		d.Probe = HTTPProbe
	}
	if d.Liveness == nil {
		d.Liveness = HTTPLiveness
	}
	if d.Slots == nil {
		d.Slots = HTTPBusySlots
	}
	if d.Usage == nil {
		d.Usage = proc.ServerUsage
	}
	if d.CheckPort == nil {
		d.CheckPort = launch.CheckPort
	}
	if d.Stdout == nil {
		d.Stdout = logfile.Locked(os.Stdout)
	}
	return d
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// HTTPProbe reports ready once /health answers 200 from pid itself; the
// hang watchdog takes over from there.
func HTTPProbe(ctx context.Context, spec config.Instance, pid int, report func(Probe)) {
	if _, err := launch.WaitReady(ctx, launch.TargetOf(spec, pid), 0, nil); err == nil {
		report(ProbeReady)
	}
}

// execStarter starts real processes through the reaper, each in its own
// process group.
type execStarter struct {
	reaper *Reaper
	env    []string
}

func (s *execStarter) Start(spec config.Instance, out *os.File) (Process, error) {
	cmd, err := launch.Prepare(spec, s.env, launch.OwnGroup)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = out, out
	ch, err := s.reaper.Start(cmd)
	if err != nil {
		return nil, launch.ExplainStart(cmd.Path, err)
	}
	return &groupProcess{pid: cmd.Process.Pid, exited: ch}, nil
}

type groupProcess struct {
	pid    int
	exited <-chan syscall.WaitStatus
}

func (p *groupProcess) PID() int                          { return p.pid }
func (p *groupProcess) Exited() <-chan syscall.WaitStatus { return p.exited }
func (p *groupProcess) Signal(sig syscall.Signal) error   { return syscall.Kill(-p.pid, sig) }
