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
	Draining                // process running, no signal yet: waiting for its busy slots before SIGTERM
	NumStates

	// The owner's own sub-states, seen from outside as the state named
	// after them (public): they exist so that the owner never waits.

	// launching: the starter is opening the log, checking the port and
	// starting the process; its result comes back as inLaunched. Seen as
	// Starting, with no pid yet.
	launching = NumStates
	// flushing: the process has exited; its output is still being copied
	// into the log (a grandchild may hold the pipe). EOF (inFlushed) or
	// the flush deadline ends it, and only then is the exit judged, so the
	// log holds all of it. Seen as Stopping.
	flushing  = NumStates + 1
	numStates = NumStates + 2
)

var stateNames = [...]string{"stopped", "starting", "ready", "stopping", "restarting", "failed", "draining", "launching", "flushing"}

// public is the state as status, events and metrics show it.
func (s State) public() State {
	switch s {
	case launching:
		return Starting
	case flushing:
		return Stopping
	}
	return s
}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Running says whether the state has a live process.
func (s State) Running() bool { return s == Starting || s == Ready || s == Draining || s == Stopping }

// RestartPolicy says what happens when a process ends without being asked.
type RestartPolicy int

const (
	RestartOnFailure RestartPolicy = iota // again unless it exited 0 on its own
	RestartAlways                         // again whatever the status
	RestartNever                          // never: stopped after a clean exit, failed otherwise
)

// ParsePolicy reads control.restart ("" is the default, on-failure).
// Config validation refuses anything else, so an error here is a spec
// that did not come through it.
func ParsePolicy(s string) (RestartPolicy, error) {
	switch s {
	case "", "on-failure":
		return RestartOnFailure, nil
	case "always":
		return RestartAlways, nil
	case "never":
		return RestartNever, nil
	}
	return RestartOnFailure, fmt.Errorf("restart = %q: not on-failure, always or never", s)
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
	inStart         input = iota // operator: want it up (start NAME, a hand-over from run)
	inStop                       // operator: want it down (stop NAME; with end, removal or shutdown)
	inRestart                    // operator: stop it if running, start again now
	inReload                     // Apply: run this spec from now on; want-up is left as it is
	inExited                     // its process exited
	inReady                      // probe: /health is 200 from our process
	inLiveness                   // watchdog: one liveness probe's result
	inDrained                    // drain: no busy slot left, or the drain's time is up
	inReadyDeadline              // timer: ready_timeout passed while starting
	inKillDeadline               // timer: grace after SIGTERM passed
	inBackoffDone                // timer: restart delay passed
	inLaunched                   // starter: the process started, or could not (log, port, exec)
	inFlushed                    // sink: EOF on the exited process's output pipe
	inFlushDeadline              // timer: the exited process's output took too long to end
	numInputs
)

// action handles one input in one state and returns the next state.
type action func(o *owner, m msg) State

// transitions is the whole state machine: for each state, what each input
// does. Every cell is written; nop marks an input that changes nothing in
// that state (a late probe result, a timer of a process that is gone).
//
//	        start, restart
//	Stopped ─────────────► launching (the starter opens the log, checks the port, execs)
//	   ▲                       │ launched
//	   │                       ▼           ready
//	   │                    Starting ──────────────► Ready
//	   │                       │ stop, restart,       │ stop, restart (drain_timeout set)
//	   │                       │ ready timeout,       ▼
//	   │                       │ hung               Draining ── drained ──┐
//	   │                       ▼                      │ hung, stop(end)   │
//	   │                    Stopping ◄────────────────┴───────────────────┘
//	   │                       │ exited  (SIGTERM sent; SIGKILL at the deadline)
//	   │   stop requested      ▼
//	   └──────────────────  flushing ── restart requested ──► launching
//	     (the exit is judged at EOF of its output, or flushLimit after it)
//
//	Starting, Ready ── exited unasked ──► flushing ──► by policy and crash count:
//	    Stopped (clean exit under on-failure or never) · Failed (never; crash loop)
//	    · Restarting ── backoff done ──► launching
//	Restarting, Failed ── start, restart, reload ──► launching · ── stop ──► Stopped
//	launching ── launched, failed ──► Failed (port taken, start failed), or
//	    Restarting (short of descriptors, memory: as a crash)
//
// Want-up is the operator's word: in launching, Draining, Stopping and
// flushing, start, stop and restart only record it (the last one wins)
// and the launch's result or the exit decides. A reload changes the spec,
// never want-up: an instance the operator stopped stays down through it,
// and takes the new spec at its next start. Stray inputs (inLaunched
// outside launching, inFlushed outside flushing) cannot come: only those
// states have a start or an output in flight.
//
// The watchdog (watchdog.go): in Ready, each liveness result is counted;
// liveness_failures failed in a row with no progress → hung: SIGKILL to the
// group, Stopping.
var transitions = [numStates][numInputs]action{
	Stopped: {
		inStart: (*owner).launchFresh, inStop: (*owner).alreadyDown, inRestart: (*owner).launchFresh,
		inReload: (*owner).reloadIdle, inExited: nop, inReady: nop, inLiveness: nop,
		inDrained: nop, inReadyDeadline: nop, inKillDeadline: nop, inBackoffDone: nop,
		inLaunched: nop, inFlushed: nop, inFlushDeadline: nop,
	},
	launching: {
		inStart: (*owner).wantWhileLaunching, inStop: (*owner).wantWhileLaunching, inRestart: (*owner).wantWhileLaunching,
		inReload: (*owner).wantWhileLaunching, inExited: nop, inReady: nop, inLiveness: nop,
		inDrained: nop, inReadyDeadline: nop, inKillDeadline: nop, inBackoffDone: nop,
		inLaunched: (*owner).launched, inFlushed: nop, inFlushDeadline: nop,
	},
	Starting: {
		inStart: (*owner).awaitReady, inStop: (*owner).stopRequested, inRestart: (*owner).restartRequested,
		inReload: (*owner).reloadRunning, inExited: (*owner).exited, inReady: (*owner).ready,
		inLiveness: nop, inDrained: nop, inReadyDeadline: (*owner).loadTimeout, inKillDeadline: nop, inBackoffDone: nop,
		inLaunched: nop, inFlushed: nop, inFlushDeadline: nop,
	},
	Ready: {
		inStart: (*owner).alreadyUp, inStop: (*owner).stopRequested, inRestart: (*owner).restartRequested,
		inReload: (*owner).reloadRunning, inExited: (*owner).exited, inReady: nop,
		inLiveness: (*owner).liveness, inDrained: nop, inReadyDeadline: nop, inKillDeadline: nop, inBackoffDone: nop,
		inLaunched: nop, inFlushed: nop, inFlushDeadline: nop,
	},
	Draining: {
		inStart: (*owner).wantWhileStopping, inStop: (*owner).wantWhileStopping, inRestart: (*owner).wantWhileStopping,
		inReload: (*owner).reloadStopping, inExited: (*owner).exited, inReady: nop,
		inLiveness: nop, inDrained: (*owner).drained, inReadyDeadline: nop, inKillDeadline: (*owner).kill, inBackoffDone: nop,
		inLaunched: nop, inFlushed: nop, inFlushDeadline: nop,
	},
	Stopping: {
		inStart: (*owner).wantWhileStopping, inStop: (*owner).wantWhileStopping, inRestart: (*owner).wantWhileStopping,
		inReload: (*owner).reloadStopping, inExited: (*owner).exited, inReady: nop,
		inLiveness: nop, inDrained: nop, inReadyDeadline: nop, inKillDeadline: (*owner).kill, inBackoffDone: nop,
		inLaunched: nop, inFlushed: nop, inFlushDeadline: nop,
	},
	flushing: {
		inStart: (*owner).wantWhileFlushing, inStop: (*owner).wantWhileFlushing, inRestart: (*owner).wantWhileFlushing,
		inReload: (*owner).wantWhileFlushing, inExited: nop, inReady: nop, inLiveness: nop,
		inDrained: nop, inReadyDeadline: nop, inKillDeadline: nop, inBackoffDone: nop,
		inLaunched: nop, inFlushed: (*owner).flushed, inFlushDeadline: (*owner).flushed,
	},
	Restarting: {
		inStart: (*owner).launchFresh, inStop: (*owner).stopIdle, inRestart: (*owner).launchFresh,
		inReload: (*owner).launchFresh, inExited: nop, inReady: nop, inLiveness: nop,
		inDrained: nop, inReadyDeadline: nop, inKillDeadline: nop, inBackoffDone: (*owner).launchAgain,
		inLaunched: nop, inFlushed: nop, inFlushDeadline: nop,
	},
	Failed: {
		inStart: (*owner).launchFresh, inStop: (*owner).stopIdle, inRestart: (*owner).launchFresh,
		inReload: (*owner).launchFresh, inExited: nop, inReady: nop, inLiveness: nop,
		inDrained: nop, inReadyDeadline: nop, inKillDeadline: nop, inBackoffDone: nop,
		inLaunched: nop, inFlushed: nop, inFlushDeadline: nop,
	},
}

// nop is an input that changes nothing in this state.
func nop(o *owner, _ msg) State { return o.state }
