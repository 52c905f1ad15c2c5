package metrics

import (
	"sync"
	"time"

	"github.com/llamaboot/llamaboot/internal/health"
	"github.com/llamaboot/llamaboot/internal/logfile"
	"github.com/llamaboot/llamaboot/internal/promtext"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

// restartReasons are the values of the reason label of
// llamaboot_instance_restarts_total, each exported from the start (at 0)
// so rate() and increase() work from the first scrape.
var restartReasons = []string{"crash", "exited", "hung", "load_timeout", "manual"}

// reasonLabel names why a running process was replaced by a new one; ""
// for ends that are not followed by a restart.
func reasonLabel(r supervise.Reason) string {
	switch r {
	case supervise.ReasonCrash:
		return "crash"
	case supervise.ReasonExited: // a clean exit restarted under restart = "always"
		return "exited"
	case supervise.ReasonHung:
		return "hung"
	case supervise.ReasonLoadTimeout:
		return "load_timeout"
	case supervise.ReasonRestartRequested:
		return "manual"
	}
	return ""
}

// Help texts of the supervisor's series.
const (
	helpState         = "The instance's state: 1 for the state it is in, 0 for the others."
	helpReady         = "1 when the instance is ready and answers its liveness probes (as /readyz and llamaboot healthcheck judge it)."
	helpRestarts      = "Times a running process of the instance was replaced by a new one, by why it ended: crash, exited (a clean exit 0, restarted under restart = \"always\"), hung (the watchdog killed it), load_timeout (not ready within ready_timeout), manual (restart requested, or its settings changed)."
	helpUptime        = "Seconds since the instance's current process started (0 when none runs)."
	helpToReady       = "How long the last start took to answer /health with 200."
	helpExit          = "Exit status of the instance's last process, as a shell gives it (128+signal when a signal ended it)."
	helpProbeFailures = "Liveness probes of the instance that failed in a row, now."
	helpLogLines      = "Lines of the instance's output that never reached its log file: a full or unwritable disk, or a disk too slow for its output."
	helpLogBytes      = "Bytes of the instance's output that never reached its log file (the lines of llamaboot_log_lines_lost_total)."
	helpInstall       = "How long the boot install took (only when one ran)."
	helpBundle        = "The installed llama.cpp bundle (always 1)."
)

// collector turns snapshots (for what an instance is now) and events (for
// what happened to it: restarts, readiness times, exit codes) into metrics
// at each scrape.
type collector struct {
	o    Options
	stop func()

	mu       sync.Mutex
	restarts map[string]map[string]float64
	toReady  map[string]float64
	exitCode map[string]float64
}

func newCollector(o Options) *collector {
	c := &collector{o: o, restarts: map[string]map[string]float64{}, toReady: map[string]float64{}, exitCode: map[string]float64{}}
	events, cancel := o.Sup.Subscribe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range events {
			c.record(e)
		}
	}()
	c.stop = func() {
		cancel()
		<-done
	}
	return c
}

func (c *collector) record(e supervise.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch e.Kind {
	case supervise.EvExited:
		c.exitCode[e.Instance] = float64(e.Code)
		// A restart follows when the event leaves it starting (at once, as
		// asked) or restarting (after the backoff).
		if r := reasonLabel(e.Reason); r != "" && (e.State == supervise.Restarting || e.State == supervise.Starting) {
			c.counts(e.Instance)[r]++
		}
	case supervise.EvReady:
		c.toReady[e.Instance] = e.Took.Seconds()
	case supervise.EvRemoved:
		delete(c.restarts, e.Instance)
		delete(c.toReady, e.Instance)
		delete(c.exitCode, e.Instance)
	}
}

// counts returns the restart counts of name; c.mu is held.
func (c *collector) counts(name string) map[string]float64 {
	m := c.restarts[name]
	if m == nil {
		m = map[string]float64{}
		c.restarts[name] = m
	}
	return m
}

// Collect gives the supervisor's families, each instance's series in the
// order the supervisor lists them.
func (c *collector) Collect() []promtext.Family {
	now := time.Now()
	snaps := c.o.Sup.Snapshots()
	health, _ := health.Judge(snaps, now, false, "")
	c.mu.Lock()
	defer c.mu.Unlock()
	fam := func(name, help, typ string) *promtext.Family {
		return &promtext.Family{Name: name, Help: help, Type: typ}
	}
	state, ready := fam("llamaboot_instance_state", helpState, promtext.Gauge), fam("llamaboot_instance_ready", helpReady, promtext.Gauge)
	restarts, uptime := fam("llamaboot_instance_restarts_total", helpRestarts, promtext.Counter), fam("llamaboot_instance_uptime_seconds", helpUptime, promtext.Gauge)
	toReady, exit := fam("llamaboot_instance_time_to_ready_seconds", helpToReady, promtext.Gauge), fam("llamaboot_instance_last_exit_code", helpExit, promtext.Gauge)
	probes := fam("llamaboot_instance_liveness_failures", helpProbeFailures, promtext.Gauge)
	logLines, logBytes := fam("llamaboot_log_lines_lost_total", helpLogLines, promtext.Counter), fam("llamaboot_log_bytes_lost_total", helpLogBytes, promtext.Counter)
	add := func(f *promtext.Family, v float64, labels ...string) {
		s := promtext.Sample{Value: v}
		for i := 0; i+1 < len(labels); i += 2 {
			s.Labels = append(s.Labels, promtext.Label{Name: labels[i], Value: labels[i+1]})
		}
		f.Samples = append(f.Samples, s)
	}
	for i, s := range snaps {
		name := s.Spec.Name
		for st := range supervise.NumStates {
			add(state, b2f(s.State == st), "instance", name, "state", st.String())
		}
		add(ready, b2f(health.Instances[i].Ready), "instance", name)
		up := 0.0
		if s.PID != 0 && !s.StartedAt.IsZero() {
			up = now.Sub(s.StartedAt).Seconds()
		}
		add(uptime, up, "instance", name)
		add(probes, float64(s.ProbeFailures), "instance", name)
		var lost logfile.Loss
		if l, _, err := c.o.Sup.Log(name); err == nil && l != nil {
			lost = l.Lost()
		}
		add(logLines, float64(lost.Lines), "instance", name)
		add(logBytes, float64(lost.Bytes), "instance", name)
		counts := c.restarts[name]
		for _, r := range restartReasons {
			add(restarts, counts[r], "instance", name, "reason", r)
		}
		if v, ok := c.toReady[name]; ok {
			add(toReady, v, "instance", name)
		}
		if v, ok := c.exitCode[name]; ok {
			add(exit, v, "instance", name)
		}
	}
	out := []promtext.Family{*state, *ready, *restarts, *uptime, *toReady, *exit, *probes, *logLines, *logBytes}
	if c.o.InstallTook != nil {
		if d, ok := c.o.InstallTook(); ok {
			out = append(out, promtext.Family{Name: "llamaboot_install_duration_seconds", Help: helpInstall, Type: promtext.Gauge, Samples: []promtext.Sample{{Value: d.Seconds()}}})
		}
	}
	if c.o.Bundle != nil {
		if b, ok := c.o.Bundle(); ok {
			out = append(out, promtext.Family{Name: "llamaboot_bundle_info", Help: helpBundle, Type: promtext.Gauge, Samples: []promtext.Sample{{
				Labels: []promtext.Label{{Name: "archive", Value: b.Archive}, {Name: "build_tag", Value: b.BuildTag}, {Name: "sha256", Value: b.SHA256}}, Value: 1}}})
		}
	}
	return out
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
