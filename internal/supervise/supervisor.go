// Package supervise is llamaboot's PID 1: it starts llama-server instances
// and the container's command as children, reaps every zombie, forwards
// signals, restarts crashed servers with backoff, tracks readiness, answers
// status and control requests on a unix socket, and stops everything inside
// Docker's grace period.
package supervise

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/launch"
	"github.com/llamaboot/llamaboot/internal/printer"
)

// Instance states, as status reports them.
const (
	StateStarting   = "starting"
	StateReady      = "ready"
	StateRestarting = "restarting"
	StateFailed     = "failed"
	StateStopped    = "stopped"
)

// Policy tunes restarts. Zero fields take defaults.
type Policy struct {
	BackoffMin   time.Duration // first restart delay
	BackoffMax   time.Duration // cap
	QuickCrash   time.Duration // a run shorter than this counts toward a crash loop
	CrashLoop    int           // this many quick crashes in a row → failed
	LogTailLines int
}

func (p Policy) withDefaults() Policy {
	if p.BackoffMin == 0 {
		p.BackoffMin = time.Second
	}
	if p.BackoffMax == 0 {
		p.BackoffMax = 30 * time.Second
	}
	if p.QuickCrash == 0 {
		p.QuickCrash = 10 * time.Second
	}
	if p.CrashLoop == 0 {
		p.CrashLoop = 5
	}
	if p.LogTailLines == 0 {
		p.LogTailLines = 20
	}
	return p
}

// Supervisor runs and watches instances.
type Supervisor struct {
	reaper *Reaper
	out    *printer.Printer
	policy Policy
	env    []string

	mu        sync.Mutex
	instances []*instance
	stopping  bool
	wg        sync.WaitGroup
}

// New returns a supervisor that starts children through reaper and prints
// events to out.
func New(reaper *Reaper, out *printer.Printer, policy Policy, env []string) *Supervisor {
	return &Supervisor{reaper: reaper, out: out, policy: policy.withDefaults(), env: env}
}

type instance struct {
	cfg config.Instance

	mu        sync.Mutex
	state     string
	pid       int
	restarts  int
	startedAt time.Time
	lastExit  string
	kick      chan string // "restart" or "stop" from the control socket
}

// InstanceStatus is one instance in `llamaboot status --json`.
type InstanceStatus struct {
	Name     string  `json:"name"`
	State    string  `json:"state"`
	PID      int     `json:"pid"`
	Port     int     `json:"port"`
	URL      string  `json:"url"`
	Restarts int     `json:"restarts"`
	UptimeS  float64 `json:"uptime_s"`
	LastExit *string `json:"last_exit"`
	LogFile  string  `json:"log_file"`
}

func (in *instance) status() InstanceStatus {
	in.mu.Lock()
	defer in.mu.Unlock()
	st := InstanceStatus{Name: in.cfg.Name, State: in.state, PID: in.pid, Port: in.cfg.Port, URL: in.cfg.URL,
		Restarts: in.restarts, LogFile: in.cfg.LogFile}
	if in.pid != 0 && !in.startedAt.IsZero() {
		st.UptimeS = time.Since(in.startedAt).Round(time.Millisecond).Seconds()
	}
	if in.lastExit != "" {
		e := in.lastExit
		st.LastExit = &e
	}
	return st
}

func (in *instance) set(f func()) {
	in.mu.Lock()
	defer in.mu.Unlock()
	f()
}

// Statuses reports every instance.
func (s *Supervisor) Statuses() []InstanceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]InstanceStatus, 0, len(s.instances))
	for _, in := range s.instances {
		out = append(out, in.status())
	}
	return out
}

func (s *Supervisor) find(name string) *instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, in := range s.instances {
		if in.cfg.Name == name {
			return in
		}
	}
	return nil
}

// Add starts supervising cfg. It refuses a name already running.
func (s *Supervisor) Add(cfg config.Instance) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return fmt.Errorf("shutting down")
	}
	for i, in := range s.instances {
		if in.cfg.Name == cfg.Name {
			if st := in.status().State; st != StateStopped && st != StateFailed {
				return fmt.Errorf("instance %q is already supervised (%s)", cfg.Name, st)
			}
			s.instances = append(s.instances[:i:i], s.instances[i+1:]...)
			break
		}
	}
	in := &instance{cfg: cfg, state: StateStarting, kick: make(chan string, 1)}
	s.instances = append(s.instances, in)
	s.wg.Add(1)
	go s.run(in)
	return nil
}

// Control sends "restart" or "stop" to an instance.
func (s *Supervisor) Control(name, op string) error {
	in := s.find(name)
	if in == nil {
		return fmt.Errorf("no instance %q", name)
	}
	if st := in.status().State; op == "restart" && (st == StateFailed || st == StateStopped) {
		// Its loop has ended: start a fresh one.
		return s.Add(in.cfg)
	}
	select {
	case in.kick <- op:
	default:
	}
	return nil
}

func (s *Supervisor) event(format string, args ...any) { s.out.Stepf(format, args...) }

// run is one instance's life: start, watch readiness, wait for exit,
// restart with backoff or give up.
func (s *Supervisor) run(in *instance) {
	defer s.wg.Done()
	cfg := in.cfg
	quick := 0
	for {
		cmd, log, err := launch.Command(cfg, s.env, launch.OwnGroup)
		if err != nil {
			s.out.Errorf("%s: %v", cfg.Name, err)
			in.set(func() { in.state, in.lastExit = StateFailed, err.Error() })
			return
		}
		fmt.Fprintf(log, "\n[llamaboot] %s starting %s %v\n", time.Now().Format(time.RFC3339), cmd.Path, cfg.Cmd)
		exitCh, err := s.reaper.Start(cmd)
		log.Close()
		if err != nil {
			s.out.Errorf("%s: start %s: %v", cfg.Name, cmd.Path, err)
			in.set(func() { in.state, in.lastExit = StateFailed, err.Error() })
			return
		}
		pid := cmd.Process.Pid
		started := time.Now()
		in.set(func() { in.state, in.pid, in.startedAt = StateStarting, pid, started })
		s.event("%s started: pid %d, %s, log %s", cfg.Name, pid, cfg.URL, cfg.LogFile)
		if s.isStopping() {
			// StopAll may have missed a process started just now.
			go s.terminate(pid, cfg.StopTimeout)
		}

		exited := make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		go s.watchReady(ctx, in, pid, exited)

		var ws syscall.WaitStatus
		stopRequested := false
	wait:
		for {
			select {
			case ws = <-exitCh:
				break wait
			case op := <-in.kick:
				stopRequested = op == "stop"
				s.event("%s: %s requested", cfg.Name, op)
				go s.terminate(pid, cfg.StopTimeout)
				if op == "restart" {
					quick = 0
				}
			}
		}
		close(exited)
		cancel()
		ran := time.Since(started)
		exit := describeExit(ws)
		in.set(func() { in.pid, in.lastExit = 0, exit })

		if s.isStopping() || stopRequested {
			in.set(func() { in.state = StateStopped })
			s.event("%s stopped (%s)", cfg.Name, exit)
			return
		}
		s.event("%s exited: %s after %.1fs", cfg.Name, exit, ran.Seconds())
		if cfg.Restart == "never" || (cfg.Restart == "on-failure" && ws.Exited() && ws.ExitStatus() == 0) {
			in.set(func() { in.state = StateStopped })
			return
		}
		if ran < s.policy.QuickCrash {
			quick++
		} else {
			quick = 1
		}
		if quick >= s.policy.CrashLoop {
			in.set(func() { in.state = StateFailed })
			s.out.Errorf("%s failed: %d quick crashes in a row; not restarting. Last lines of %s:\n%s",
				cfg.Name, quick, cfg.LogFile, launch.Tail(cfg.LogFile, s.policy.LogTailLines))
			return
		}
		delay := min(s.policy.BackoffMin<<(quick-1), s.policy.BackoffMax)
		in.set(func() { in.state = StateRestarting; in.restarts++ })
		s.event("%s restarting in %.1fs", cfg.Name, delay.Seconds())
		select {
		case <-time.After(delay):
		case op := <-in.kick:
			if op == "stop" {
				in.set(func() { in.state = StateStopped })
				s.event("%s stopped", cfg.Name)
				return
			}
		}
		if s.isStopping() {
			in.set(func() { in.state = StateStopped })
			return
		}
	}
}

func (s *Supervisor) watchReady(ctx context.Context, in *instance, pid int, exited <-chan struct{}) {
	took, err := launch.WaitReady(ctx, in.cfg.ProbeURL(), in.cfg.ReadyTimeout, exited)
	if err != nil {
		if ctx.Err() == nil && err != launch.ErrExited {
			s.out.Errorf("%s: %v; restarting it", in.cfg.Name, err)
			s.terminate(pid, in.cfg.StopTimeout)
		}
		return
	}
	in.set(func() {
		if in.pid == pid {
			in.state = StateReady
		}
	})
	s.event("%s ready after %.2fs at %s", in.cfg.Name, took.Seconds(), in.cfg.URL)
}

// terminate sends SIGTERM to a process group, then SIGKILL to what is left
// of the group after grace.
func (s *Supervisor) terminate(pid int, grace time.Duration) {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if syscall.Kill(-pid, 0) != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	if syscall.Kill(-pid, 0) == nil {
		s.event("pid %d still running after %s: SIGKILL", pid, grace)
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

func (s *Supervisor) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

// StopAll stops every instance in parallel: SIGTERM to each group, SIGKILL
// to what is left after grace. It returns when every instance loop ended.
func (s *Supervisor) StopAll(grace time.Duration) {
	s.mu.Lock()
	s.stopping = true
	list := append([]*instance(nil), s.instances...)
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, in := range list {
		st := in.status()
		if st.PID == 0 {
			continue
		}
		g := min(grace, in.cfg.StopTimeout)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.terminate(st.PID, g)
		}()
	}
	wg.Wait()
	for _, in := range list {
		select {
		case in.kick <- "stop":
		default:
		}
	}
	s.wg.Wait()
}

// StartCmd starts the container's command as a child in our process group
// (so a terminal's Ctrl-C reaches it as well).
func (s *Supervisor) StartCmd(argv []string) (*exec.Cmd, <-chan syscall.WaitStatus, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = s.env
	ch, err := s.reaper.Start(cmd)
	return cmd, ch, err
}
