package supervise

import (
	"fmt"
	"strings"
)

// State is what an instance is observed to be doing.
type State int

const (
	Stopped    State = iota // no process, and none will start unless asked
	Starting                // process running, /health not yet 200 from it
	Ready                   // process running and answering /health
	Stopping                // SIGTERM sent; waiting for it to exit (then KILL)
	Restarting              // no process; waiting out the backoff
	Failed                  // no process; gave up (crash loop, start failed, port taken)
)

var stateNames = [...]string{"stopped", "starting", "ready", "stopping", "restarting", "failed"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Running says whether the state has a live process.
func (s State) Running() bool { return s == Starting || s == Ready || s == Stopping }

// RestartPolicy says what happens when a process ends without being asked.
type RestartPolicy int

const (
	RestartOnFailure RestartPolicy = iota // again unless it exited 0 on its own
	RestartAlways                         // again whatever the status
	RestartNever                          // never: stopped after a clean exit, failed otherwise
)

// ParsePolicy reads control.restart; config validation has already
// refused anything else, so unknown values mean the default.
func ParsePolicy(s string) RestartPolicy {
	switch s {
	case "always":
		return RestartAlways
	case "never":
		return RestartNever
	}
	return RestartOnFailure
}

func (p RestartPolicy) String() string {
	return [...]string{"on-failure", "always", "never"}[p]
}

// Reason is why an instance's last process ended (or is ending). Restart
// decisions read it, never guess from an exit code alone.
type Reason int

const (
	ReasonNone             Reason = iota
	ReasonCrash                   // it ended on its own, by a signal or a non-zero status
	ReasonStopRequested           // stop NAME, removal, or supervisor shutdown
	ReasonRestartRequested        // restart NAME or a changed spec
	ReasonHung                    // the watchdog found it unresponsive
	ReasonLoadTimeout             // not ready within ready_timeout
	ReasonPortTaken               // another process holds its port: not started
	ReasonStartFailed             // executable missing, log not writable, …
	ReasonExited                  // it ended on its own with status 0: not a crash
)

var reasonNames = [...]string{"", "crash", "stop requested", "restart requested", "hung", "load timeout", "port taken", "start failed", "exited"}

// loopNames name a run of quick ends of one reason, for the crash-loop
// failure ("3 load timeouts in a row", not "3 quick crashes").
var loopNames = map[Reason]string{ReasonCrash: "quick crashes", ReasonExited: "quick clean exits",
	ReasonLoadTimeout: "load timeouts", ReasonHung: "hangs"}

// describeLoop says what a run of quick ends was: "3 quick crashes in a
// row", or with mixed reasons "5 quick ends in a row (3 crashes, 2 load
// timeouts)".
func describeLoop(streak []Reason) string {
	counts := map[Reason]int{}
	var order []Reason
	for _, r := range streak {
		if counts[r] == 0 {
			order = append(order, r)
		}
		counts[r]++
	}
	if len(order) == 1 {
		name := loopNames[order[0]]
		if name == "" {
			name = "quick ends (" + order[0].String() + ")"
		}
		return fmt.Sprintf("%d %s in a row", len(streak), name)
	}
	parts := make([]string, len(order))
	for i, r := range order {
		name := strings.TrimPrefix(loopNames[r], "quick ")
		switch {
		case name == "":
			name = r.String()
		case counts[r] == 1:
			name = strings.TrimSuffix(strings.TrimSuffix(name, "es"), "s") // crashes → crash, load timeouts → load timeout
		}
		parts[i] = fmt.Sprintf("%d %s", counts[r], name)
	}
	return fmt.Sprintf("%d quick ends in a row (%s)", len(streak), strings.Join(parts, ", "))
}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}

// input is everything that can happen to an instance. Only its owner
// goroutine consumes inputs.
type input int

const (
	inStart         input = iota // operator: want it up (start NAME, Apply)
	inStop                       // operator: want it down (stop NAME)
	inRestart                    // operator: stop it if running, start again now
	inExited                     // its process exited
	inReady                      // probe: /health is 200 from our process
	inHung                       // probe: no longer answering
	inLiveness                   // watchdog: one liveness probe's result
	inDrained                    // drain: no busy slot left, or the drain's time is up
	inReadyDeadline              // timer: ready_timeout passed while starting
	inKillDeadline               // timer: grace after SIGTERM passed
	inBackoffDone                // timer: restart delay passed
	inSpec                       // a new spec for an instance that stays down (on demand): no transition
	numInputs
)

// action handles one input in one state and returns the next state.
type action func(o *owner, m msg) State

// transitions is the whole state machine: for each state, what each input
// does. A missing entry means the input is ignored in that state (a late
// probe result, a stop for something already down).
//
//	           start, restart              ready
//	Stopped ─────────────────► Starting ──────────► Ready
//	   ▲                          │ stop, restart,    │ stop, restart, hung
//	   │                          │ ready timeout,    │
//	   │                          ▼ hung              ▼
//	   │   exited, stop ◄──── Stopping ◄──────────────┘  (SIGKILL at the deadline)
//	   └────requested             │
//	                              └─ exited, restart requested ──► Starting
//
//	Starting, Ready ── exited unasked ──► by policy and crash count:
//	    Stopped (clean exit under on-failure or never) · Failed (never; crash loop)
//	    · Restarting ── backoff done ──► Starting
//	Restarting, Failed ── start, restart ──► Starting · ── stop ──► Stopped
//
// In Stopping, start/stop/restart only record what is wanted; the exit
// decides.
//
// The watchdog (watchdog.go): in Ready, each liveness result is counted;
// liveness_failures failed in a row with no progress → hung: SIGKILL to the
// group, Stopping. A stop or restart of a Ready instance first drains
// (Stopping, no signal yet) until its slots are idle or drain_timeout is
// up; drained → SIGTERM.
var transitions = [...][numInputs]action{
	Stopped: {
		inStart:   (*owner).launchFresh,
		inRestart: (*owner).launchFresh,
	},
	Starting: {
		inStop:          (*owner).stopRequested,
		inRestart:       (*owner).restartRequested,
		inExited:        (*owner).exited,
		inReady:         (*owner).ready,
		inHung:          (*owner).hung,
		inReadyDeadline: (*owner).loadTimeout,
	},
	Ready: {
		inStop:     (*owner).stopRequested,
		inRestart:  (*owner).restartRequested,
		inExited:   (*owner).exited,
		inHung:     (*owner).hung,
		inLiveness: (*owner).liveness,
	},
	Stopping: {
		inStart:        (*owner).wantWhileStopping,
		inStop:         (*owner).wantWhileStopping,
		inRestart:      (*owner).wantWhileStopping,
		inExited:       (*owner).exited,
		inKillDeadline: (*owner).kill,
		inDrained:      (*owner).drained,
	},
	Restarting: {
		inStart:       (*owner).launchFresh,
		inStop:        (*owner).stopIdle,
		inRestart:     (*owner).launchFresh,
		inBackoffDone: (*owner).launchAgain,
	},
	Failed: {
		inStart:   (*owner).launchFresh,
		inStop:    (*owner).stopIdle,
		inRestart: (*owner).launchFresh,
	},
}
