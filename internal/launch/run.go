package launch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/llamaboot/llamaboot/internal/access"
	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/printer"
)

// RunOptions tune Run.
type RunOptions struct {
	Wait    bool          // wait for every instance's /health to answer 200
	Timeout time.Duration // readiness timeout; 0 uses each instance's ready_timeout
	// RecordPath, if set, is where background instances are recorded
	// for status and stop (RunRecordPath).
	RecordPath string
}

// ErrFailed is returned by Run when an instance did not start, did not
// become ready, or (in the foreground) exited with an error; the details
// have been printed.
var ErrFailed = errors.New("one or more instances failed")

// Run starts every instance of plan as the old launcher did: background
// ones detached in their own session, foreground ones side by side (the old
// launcher ran them one after another), returning when those have exited.
func Run(ctx context.Context, p *printer.Printer, plan *config.Plan, o RunOptions) error {
	if ctx == nil {
		ctx = context.Background()
	}
	type started struct {
		in     config.Instance
		cmd    *os.Process
		exited chan struct{}
		status error
	}
	// A taken port is the operator's to fix, and nothing starts: the
	// instance would die on bind and --wait would see the other process.
	var taken []error
	var recorded []RunRecord
	if o.RecordPath != "" {
		recorded, _ = ReadRunRecords(o.RecordPath)
	}
	for _, in := range plan.Instances {
		if err := CheckPort(in); err != nil {
			nameRecordedHolder(err, in.Port, recorded)
			p.Errorf("%v", err)
			taken = append(taken, err)
		}
	}
	// So is a missing executable (exit 2, as any bad input): the message
	// names where it is set or where it was looked for.
	if err := MissingExecutables(plan.Instances, os.Environ()); err != nil {
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			p.Errorf("%v", e)
		}
		taken = append(taken, err)
	}
	if len(taken) > 0 {
		p.Errorf("nothing was started")
		return errors.Join(append([]error{ErrFailed}, taken...)...)
	}
	var fg, all []*started
	var records []RunRecord
	failed := false
	for _, in := range plan.Instances {
		mode := OwnGroup
		if in.Background {
			mode = OwnSession
		}
		cmd, log, err := Command(in, os.Environ(), mode)
		if err != nil {
			p.Errorf("%v", err)
			failed = true
			continue
		}
		err = ExplainStart(cmd.Path, cmd.Start())
		log.Close()
		if err != nil {
			p.Errorf("instance %q: start %s: %v", in.Name, cmd.Path, err)
			failed = true
			continue
		}
		s := &started{in: in, cmd: cmd.Process, exited: make(chan struct{})}
		go func() {
			s.status = cmd.Wait()
			close(s.exited)
		}()
		how := "background"
		if in.Background {
			pid := cmd.Process.Pid
			records = append(records, RunRecord{Name: in.Name, PID: pid, StartTicks: startTicks(pid), Port: in.Port, URL: in.URL,
				LogFile: in.LogFile, StopS: in.StopTimeout.Seconds(), StartedAt: time.Now().Unix()})
		} else {
			how = "foreground"
			fg = append(fg, s)
		}
		p.Stepf("started %s (%s): pid %d, log %s, url %s", in.Name, how, cmd.Process.Pid, in.LogFile, in.URL)
		all = append(all, s)
	}
	if o.RecordPath != "" && len(records) > 0 {
		if err := recordRun(o.RecordPath, records); err != nil {
			p.Warnf("cannot record the background instances in %s (%v): status and stop will not know them; stop them with kill -TERM -PID", o.RecordPath, access.Explain(err, access.AppDir))
		}
	}

	if o.Wait {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, s := range all {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t := o.Timeout
				if t == 0 {
					t = s.in.ReadyTimeout
				}
				took, err := WaitReady(ctx, TargetOf(s.in, s.cmd.Pid), t, s.exited)
				if err != nil {
					p.Errorf("instance %s not ready: %v; last lines of %s:\n%s", s.in.Name, err, s.in.LogFile, Tail(s.in.LogFile, 20))
					mu.Lock()
					failed = true
					mu.Unlock()
					return
				}
				p.Stepf("%s ready after %.2fs at %s", s.in.Name, took.Seconds(), s.in.URL)
			}()
		}
		wg.Wait()
	}

	if len(fg) > 0 {
		// Foreground instances run side by side; pass our signals on and
		// return when all have exited.
		sigs := make(chan os.Signal, 4)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
		defer signal.Stop(sigs)
		for _, s := range fg {
			for done := false; !done; {
				select {
				case sig := <-sigs:
					for _, o := range fg {
						syscall.Kill(-o.cmd.Pid, sig.(syscall.Signal))
					}
				case <-s.exited:
					done = true
				}
			}
			if s.status != nil {
				p.Errorf("%s exited: %v (log %s)", s.in.Name, s.status, s.in.LogFile)
				failed = true
			} else {
				p.Stepf("%s exited", s.in.Name)
			}
		}
	}
	if failed {
		return ErrFailed
	}
	return nil
}

// nameRecordedHolder names the holder of a taken port as the instance an
// earlier plain run started, when one of its records is alive on that
// port: "standin-llama-s" says less than `instance "a"`.
func nameRecordedHolder(err error, port int, recorded []RunRecord) {
	var pt *PortTakenError
	if !errors.As(err, &pt) {
		return
	}
	for _, r := range recorded {
		if r.Port == port && r.Alive() {
			pt.Holder = fmt.Sprintf("pid %d, instance %q started by an earlier plain run (llamaboot stop %s)", r.PID, r.Name, r.Name)
			return
		}
	}
}
