package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/llamaboot/llamaboot/internal/logfile"
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

var (
	descState = prometheus.NewDesc("llamaboot_instance_state",
		"The instance's state: 1 for the state it is in, 0 for the others.", []string{"instance", "state"}, nil)
	descReady = prometheus.NewDesc("llamaboot_instance_ready",
		"1 when the instance is ready and answers its liveness probes (as /readyz and llamaboot healthcheck judge it).", []string{"instance"}, nil)
	descRestarts = prometheus.NewDesc("llamaboot_instance_restarts_total",
		"Times a running process of the instance was replaced by a new one, by why it ended: crash, exited (a clean exit 0, restarted under restart = \"always\"), hung (the watchdog killed it), load_timeout (not ready within ready_timeout), manual (restart requested, or its settings changed).",
		[]string{"instance", "reason"}, nil)
	descUptime = prometheus.NewDesc("llamaboot_instance_uptime_seconds",
		"Seconds since the instance's current process started (0 when none runs).", []string{"instance"}, nil)
	descToReady = prometheus.NewDesc("llamaboot_instance_time_to_ready_seconds",
		"How long the last start took to answer /health with 200.", []string{"instance"}, nil)
	descExit = prometheus.NewDesc("llamaboot_instance_last_exit_code",
		"Exit status of the instance's last process, as a shell gives it (128+signal when a signal ended it).", []string{"instance"}, nil)
	descProbeFailures = prometheus.NewDesc("llamaboot_instance_liveness_failures",
		"Liveness probes of the instance that failed in a row, now.", []string{"instance"}, nil)
	descLogLines = prometheus.NewDesc("llamaboot_log_lines_lost_total",
		"Lines of the instance's output that never reached its log file: a full or unwritable disk, or a disk too slow for its output.", []string{"instance"}, nil)
	descLogBytes = prometheus.NewDesc("llamaboot_log_bytes_lost_total",
		"Bytes of the instance's output that never reached its log file (the lines of llamaboot_log_lines_lost_total).", []string{"instance"}, nil)
	descInstall = prometheus.NewDesc("llamaboot_install_duration_seconds",
		"How long the boot install took (only when one ran).", nil, nil)
	descBundle = prometheus.NewDesc("llamaboot_bundle_info",
		"The installed llama.cpp bundle (always 1).", []string{"build_tag", "sha256", "archive"}, nil)
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

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descState, descReady, descRestarts, descUptime, descToReady, descExit, descProbeFailures, descLogLines, descLogBytes, descInstall, descBundle} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	snaps := c.o.Sup.Snapshots()
	health, _ := supervise.Judge(snaps, now, false, "")
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, s := range snaps {
		name := s.Spec.Name
		for st := supervise.Stopped; st <= supervise.Failed; st++ {
			ch <- gauge(descState, b2f(s.State == st), name, st.String())
		}
		ch <- gauge(descReady, b2f(health.Instances[i].Ready), name)
		up := 0.0
		if s.PID != 0 && !s.StartedAt.IsZero() {
			up = now.Sub(s.StartedAt).Seconds()
		}
		ch <- gauge(descUptime, up, name)
		ch <- gauge(descProbeFailures, float64(s.ProbeFailures), name)
		var lost logfile.Loss
		if l, _, err := c.o.Sup.Log(name); err == nil && l != nil {
			lost = l.Lost()
		}
		ch <- prometheus.MustNewConstMetric(descLogLines, prometheus.CounterValue, float64(lost.Lines), name)
		ch <- prometheus.MustNewConstMetric(descLogBytes, prometheus.CounterValue, float64(lost.Bytes), name)
		counts := c.restarts[name]
		for _, r := range restartReasons {
			ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, counts[r], name, r)
		}
		if v, ok := c.toReady[name]; ok {
			ch <- gauge(descToReady, v, name)
		}
		if v, ok := c.exitCode[name]; ok {
			ch <- gauge(descExit, v, name)
		}
	}
	if c.o.InstallTook != nil {
		if d, ok := c.o.InstallTook(); ok {
			ch <- gauge(descInstall, d.Seconds())
		}
	}
	if c.o.Bundle != nil {
		if b, ok := c.o.Bundle(); ok {
			ch <- gauge(descBundle, 1, b.BuildTag, b.SHA256, b.Archive)
		}
	}
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
