package supervise

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
)

func TestJudge(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	spec := func(name string) config.Instance {
		return config.Instance{Name: name, ReadyTimeout: 10 * time.Minute}
	}
	ready := Snapshot{Spec: spec("a"), State: Ready, WantUp: true, PID: 10, StartedAt: now.Add(-time.Hour)}
	for _, c := range []struct {
		name        string
		snaps       []Snapshot
		only        string
		ready, live bool
		readyLine   string
		liveLine    string
	}{
		{"none supervised", nil, "", true, true,
			"ready: the supervisor answers; no instance is supervised", "live: the supervisor answers; no instance is supervised"},
		{"all ready", []Snapshot{ready, {Spec: spec("b"), State: Ready, WantUp: true}}, "", true, true,
			"ready: a, b", "live: the supervisor answers; none of 2 instance(s) is failed or hung"},
		{"loading", []Snapshot{ready, {Spec: spec("b"), State: Starting, WantUp: true, PID: 11, StartedAt: now.Add(-12 * time.Second)}}, "", false, true,
			"not ready: b: starting for 12s (loading; ready_timeout 10m0s)", ""},
		{"one named", []Snapshot{ready, {Spec: spec("b"), State: Starting, WantUp: true, PID: 11, StartedAt: now}}, "a", true, true, "ready: a", ""},
		{"probes failing", []Snapshot{{Spec: spec("a"), State: Ready, WantUp: true, PID: 10, ProbeFailures: 2, ProbeErr: "GET /slots: no answer within 10s"}}, "", false, true,
			"not ready: a: not answering: 2 liveness probe(s) in a row failed (GET /slots: no answer within 10s)", ""},
		{"being killed as hung", []Snapshot{{Spec: spec("a"), State: Stopping, WantUp: true, PID: 10, LastReason: ReasonHung}}, "", false, false,
			"not ready: a: hung: being killed and restarted by the watchdog", "not live: a: hung: being killed and restarted by the watchdog"},
		{"restarting", []Snapshot{{Spec: spec("a"), State: Restarting, WantUp: true, LastReason: ReasonCrash, LastExit: "exit code 1"}}, "", false, true,
			"not ready: a: restarting after crash (exit code 1)", ""},
		{"stopped on request", []Snapshot{{Spec: spec("a"), State: Stopped, LastReason: ReasonStopRequested, LastExit: "exit code 0"}}, "", false, true,
			"not ready: a: stopped on request (llamaboot start a brings it back)", ""},
		{"failed", []Snapshot{ready, {Spec: spec("b"), State: Failed, WantUp: true, LastReason: ReasonHung, LastExit: "killed by killed"}}, "", false, false,
			"not ready: b: failed: hung (killed by killed); not restarting", "not live: b: failed: hung (killed by killed); not restarting"},
		{"could not start", []Snapshot{{Spec: spec("a"), State: Failed, WantUp: true, LastReason: ReasonPortTaken, Err: "port 8080 is taken by pid 7 (nginx)"}}, "", false, false,
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
	_, err := Judge([]Snapshot{ready}, now, false, "zz")
	if !errors.Is(err, ErrUnknownInstance) || !strings.Contains(err.Error(), `"zz" (supervised: a)`) {
		t.Errorf("unknown instance: %v", err)
	}
}

func TestSocketHealth(t *testing.T) {
	h := newHarness(t)
	sock := serve(t, h)
	h.sup.Apply([]config.Instance{h.spec("a", 8001, "on-failure")})
	ev := h.expect("a", EvStarted)
	r, err := GetHealth(sock, "", false, 5*time.Second)
	if err != nil || r.OK || !strings.HasPrefix(r.Summary, "not ready: a: starting for") || r.Instances[0].State != "starting" {
		t.Errorf("while loading: %+v %v", r, err)
	}
	if r, err := GetHealth(sock, "", true, 5*time.Second); err != nil || !r.OK {
		t.Errorf("loading is live: %+v %v", r, err)
	}
	h.probe.report(t, ev.PID, ProbeReady)
	h.expect("a", EvReady)
	if r, err := GetHealth(sock, "a", false, 5*time.Second); err != nil || !r.OK || r.Summary != "ready: a" {
		t.Errorf("ready: %+v %v", r, err)
	}
	_, err = GetHealth(sock, "b", false, 5*time.Second)
	var re *RemoteError
	if !errors.As(err, &re) || !re.BadInput() || !strings.Contains(err.Error(), `no such instance: "b" (supervised: a)`) {
		t.Errorf("unknown instance: %v", err)
	}
	if _, err := GetHealth(sock, "../a", false, 5*time.Second); !errors.As(err, &re) || re.Status != 400 {
		t.Errorf("bad name: %v", err)
	}
	if _, err := GetHealth(filepath.Join(t.TempDir(), "none.sock"), "", false, time.Second); !errors.Is(err, ErrNoSupervisor) {
		t.Errorf("no supervisor: %v", err)
	}
}
