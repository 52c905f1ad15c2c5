package health

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

func TestJudge(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	spec := func(name string) config.Instance {
		return config.Instance{Name: name, ReadyTimeout: 10 * time.Minute}
	}
	ready := supervise.Snapshot{Spec: spec("a"), State: supervise.Ready, WantUp: true, PID: 10, StartedAt: now.Add(-time.Hour)}
	for _, c := range []struct {
		name        string
		snaps       []supervise.Snapshot
		only        string
		ready, live bool
		readyLine   string
		liveLine    string
	}{
		{"none supervised", nil, "", true, true,
			"ready: the supervisor answers; no instance is supervised", "live: the supervisor answers; no instance is supervised"},
		{"all ready", []supervise.Snapshot{ready, {Spec: spec("b"), State: supervise.Ready, WantUp: true}}, "", true, true,
			"ready: a, b", "live: the supervisor answers; none of 2 instance(s) is failed or hung"},
		{"loading", []supervise.Snapshot{ready, {Spec: spec("b"), State: supervise.Starting, WantUp: true, PID: 11, StartedAt: now.Add(-12 * time.Second)}}, "", false, true,
			"not ready: b: starting for 12s (loading; ready_timeout 10m0s)", ""},
		{"one named", []supervise.Snapshot{ready, {Spec: spec("b"), State: supervise.Starting, WantUp: true, PID: 11, StartedAt: now}}, "a", true, true, "ready: a", ""},
		{"probes failing", []supervise.Snapshot{{Spec: spec("a"), State: supervise.Ready, WantUp: true, PID: 10, ProbeFailures: 2, ProbeErr: "GET /slots: no answer within 10s"}}, "", false, true,
			"not ready: a: not answering: 2 liveness probe(s) in a row failed (GET /slots: no answer within 10s)", ""},
		{"being killed as hung", []supervise.Snapshot{{Spec: spec("a"), State: supervise.Stopping, WantUp: true, PID: 10, LastReason: supervise.ReasonHung}}, "", false, false,
			"not ready: a: hung: being killed and restarted by the watchdog", "not live: a: hung: being killed and restarted by the watchdog"},
		{"restarting", []supervise.Snapshot{{Spec: spec("a"), State: supervise.Restarting, WantUp: true, LastReason: supervise.ReasonCrash, LastExit: "exit code 1"}}, "", false, true,
			"not ready: a: restarting after crash (exit code 1)", ""},
		{"stopped on request", []supervise.Snapshot{{Spec: spec("a"), State: supervise.Stopped, LastReason: supervise.ReasonStopRequested, LastExit: "exit code 0"}}, "", false, true,
			"not ready: a: stopped on request (llamaboot start a brings it back)", ""},
		{"on demand, down", []supervise.Snapshot{{Spec: config.Instance{Name: "a", Routing: config.Routing{OnDemand: true}}, State: supervise.Stopped}}, "", true, true,
			"ready: a", ""},
		{"failed", []supervise.Snapshot{ready, {Spec: spec("b"), State: supervise.Failed, WantUp: true, LastReason: supervise.ReasonHung, LastExit: "killed by killed"}}, "", false, false,
			"not ready: b: failed: hung (killed by killed); not restarting", "not live: b: failed: hung (killed by killed); not restarting"},
		{"could not start", []supervise.Snapshot{{Spec: spec("a"), State: supervise.Failed, WantUp: true, LastReason: supervise.ReasonPortTaken, Err: "port 8080 is taken by pid 7 (nginx)"}}, "", false, false,
			"not ready: a: failed: port 8080 is taken by pid 7 (nginx)", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := Judge(c.snaps, now, false, c.only)
			if err != nil || r.OK != c.ready || r.Summary != c.readyLine || r.Check != "ready" {
				t.Errorf("ready: %+v %v\nwant ok=%v %q", r, err, c.ready, c.readyLine)
			}
			l, err := Judge(c.snaps, now, true, c.only)
			if err != nil || l.OK != c.live || (c.liveLine != "" && l.Summary != c.liveLine) || l.Check != "live" {
				t.Errorf("live: %+v %v\nwant ok=%v %q", l, err, c.live, c.liveLine)
			}
		})
	}
	_, err := Judge([]supervise.Snapshot{ready}, now, false, "zz")
	if !errors.Is(err, supervise.ErrUnknownInstance) || !strings.Contains(err.Error(), `"zz" (supervised: a)`) {
		t.Errorf("unknown instance: %v", err)
	}
}

func TestGated(t *testing.T) {
	ready := Health{OK: true, Check: "ready", Summary: "ready: a", Instances: []InstanceHealth{{Name: "a", Ready: true}}}
	booting := func(int) string { return "booting: loading cfg.toml and starting its instances" }
	none := func(n int) string {
		if n == 0 {
			return "no instance"
		}
		return ""
	}
	for _, c := range []struct {
		h      Health
		gate   func(int) string
		only   string
		ok     bool
		prefix string
	}{
		{ready, nil, "", true, "ready"},
		{ready, booting, "", false, "not ready: booting"},
		{ready, booting, "a", true, "ready"}, // one instance asked about: its own verdict
		{ready, none, "", true, "ready"},
		{Health{OK: true, Check: "ready"}, none, "", false, "not ready: no instance"},
		{Health{OK: true, Check: "live"}, booting, "", true, ""}, // live is not gated
	} {
		got := c.h.Gated(c.gate, c.only)
		if got.OK != c.ok || !strings.HasPrefix(got.Summary, c.prefix) {
			t.Errorf("%+v gated: %+v", c.h, got)
		}
	}
}
