// Package health owns the supervisor's health verdicts: whether every
// supervised instance is ready, or the supervisor is live, judged from the
// owners' snapshots by one rule set shared by `llamaboot healthcheck`, the
// control socket's /health and the HTTP endpoint's /readyz and /livez.
package health

import (
	"fmt"
	"strings"
	"time"

	"github.com/llamaboot/llamaboot/internal/supervise"
)

// Health is the verdict of `llamaboot healthcheck` and of the HTTP
// endpoint's /readyz and /livez: one rule set, judged here from snapshots.
//
// Ready: every supervised instance is ready and its last liveness probe
// answered. Live: the supervisor answers and no instance is failed or
// being killed as hung (the watchdog restarts hung instances itself; what
// it cannot mend is a failed one).
type Health struct {
	OK        bool             `json:"ok"`
	Check     string           `json:"check"`   // "ready" or "live"
	Summary   string           `json:"summary"` // one line: what is wrong, or that nothing is
	Instances []InstanceHealth `json:"instances"`
}

// InstanceHealth is one instance's part of the verdict.
type InstanceHealth struct {
	Name  string `json:"name"`
	State string `json:"state"`
	Ready bool   `json:"ready"`
	Live  bool   `json:"live"`
	Why   string `json:"why,omitempty"` // why it is not ready
}

// Judge returns the health of snaps (only the instance named only, when
// set): readiness, or liveness when live is set.
func Judge(snaps []supervise.Snapshot, now time.Time, live bool, only string) (Health, error) {
	return JudgeWith(snaps, nil, now, live, only)
}

// OperatorStopped marks the on-demand instances of snaps that the
// operator stopped (the router knows: the supervisor sees its idle stops
// and the operator's alike) as plain instances, so that they are judged
// as every instance stopped on request is: not ready. An on-demand
// instance down waiting for a request stays ready. stopped nil: snaps as
// they are (no router runs).
func OperatorStopped(snaps []supervise.Snapshot, stopped func(name string) bool) []supervise.Snapshot {
	if stopped == nil {
		return snaps
	}
	for i := range snaps {
		if snaps[i].Spec.Routing.OnDemand && snaps[i].State == supervise.Stopped && stopped(snaps[i].Spec.Name) {
			snaps[i].Spec.Routing.OnDemand = false
		}
	}
	return snaps
}

// JudgeWith is Judge with instances not handed to the supervisor yet
// (entry's model downloads; see PendingHealth) judged beside snaps.
func JudgeWith(snaps []supervise.Snapshot, pending []InstanceHealth, now time.Time, live bool, only string) (Health, error) {
	all := make([]InstanceHealth, 0, len(snaps)+len(pending))
	for _, s := range snaps {
		all = append(all, judgeOne(s, now))
	}
	all = append(all, pending...)
	h := Health{Check: "ready", OK: true, Instances: []InstanceHealth{}}
	if live {
		h.Check = "live"
	}
	var bad []string
	found := false
	for _, ih := range all {
		if only != "" && ih.Name != only {
			continue
		}
		found = true
		h.Instances = append(h.Instances, ih)
		if ok := ih.Ready || (live && ih.Live); !ok {
			h.OK = false
			bad = append(bad, ih.Name+": "+ih.Why)
		}
	}
	if only != "" && !found {
		var names []string
		for _, ih := range all {
			names = append(names, ih.Name)
		}
		return h, fmt.Errorf("%w: %q (supervised: %s)", supervise.ErrUnknownInstance, only, strings.Join(names, ", "))
	}
	switch {
	case !h.OK:
		h.Summary = "not " + h.Check + ": " + strings.Join(bad, "; ")
	case len(h.Instances) == 0:
		h.Summary = h.Check + ": the supervisor answers; no instance is supervised"
	case live:
		h.Summary = fmt.Sprintf("live: the supervisor answers; none of %d instance(s) is failed or hung", len(h.Instances))
	default:
		names := make([]string, len(h.Instances))
		for i, ih := range h.Instances {
			names[i] = ih.Name
		}
		h.Summary = fmt.Sprintf("ready: %s", strings.Join(names, ", "))
	}
	return h, nil
}

// Gated is h with the supervisor's own readiness applied: notReady says
// why the supervisor as a whole is not ready (its boot is under way, or it
// was asked to serve a config and has no instance), "" when it is. Given
// the number of instances judged. Liveness and one-instance checks are
// left as they are.
func (h Health) Gated(notReady func(instances int) string, only string) Health {
	if notReady == nil || h.Check != "ready" || only != "" {
		return h
	}
	if why := notReady(len(h.Instances)); why != "" {
		h.OK = false
		h.Summary = "not ready: " + why
	}
	return h
}

func judgeOne(s supervise.Snapshot, now time.Time) InstanceHealth {
	ih := InstanceHealth{Name: s.Spec.Name, State: s.State.String(), Live: true}
	since := func(t time.Time) string { return now.Sub(t).Round(time.Second).String() }
	exit := ""
	if s.LastExit != "" {
		exit = " (" + s.LastExit + ")"
	}
	switch s.State {
	case supervise.Ready:
		if s.ProbeFailures == 0 {
			ih.Ready = true
			return ih
		}
		ih.Why = fmt.Sprintf("not answering: %d liveness probe(s) in a row failed (%s)", s.ProbeFailures, s.ProbeErr)
	case supervise.Starting:
		ih.Why = fmt.Sprintf("starting for %s (loading; ready_timeout %s)", since(s.StartedAt), s.Spec.ReadyTimeout)
		if s.Spec.ReadyTimeout == 0 {
			ih.Why = fmt.Sprintf("starting for %s (loading; no ready_timeout)", since(s.StartedAt))
		}
	case supervise.Draining:
		ih.Why = "draining: waiting for its busy slots before stopping (" + s.LastReason.String() + ")"
	case supervise.Stopping:
		ih.Why = "stopping: " + s.LastReason.String()
		if s.LastReason == supervise.ReasonHung {
			ih.Live, ih.Why = false, "hung: being killed and restarted by the watchdog"
		}
	case supervise.Restarting:
		ih.Why = "restarting after " + s.LastReason.String() + exit
	case supervise.Stopped:
		if s.Spec.Routing.OnDemand {
			// Down until a request comes: the router starts it.
			ih.Ready, ih.Why = true, "on demand: the router starts it on a request"
			return ih
		}
		ih.Why = "stopped" + exit
		if !s.WantUp {
			ih.Why = fmt.Sprintf("stopped on request (llamaboot start %s brings it back)", s.Spec.Name)
		}
	case supervise.Failed:
		ih.Live = false
		ih.Why = "failed: " + s.LastReason.String() + exit + "; not restarting"
		if s.Err != "" {
			ih.Why = "failed: " + s.Err
		}
	}
	return ih
}
