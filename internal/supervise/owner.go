package supervise

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/launch"
	"github.com/llamaboot/llamaboot/internal/logfile"
)

// msg is one input to an owner, with what it carries.
type msg struct {
	in     input
	op     Op                 // set when an operator asked: published as EvRequested
	req    uint64             // the operator request's number, in its EvRequested
	reply  chan<- Decision    // where the owner answers what it decided (buffered)
	pid    int                // inExited, inReady, inLiveness, inDrained: which process
	ws     syscall.WaitStatus // inExited
	grace  time.Duration      // inStop: a shorter grace (supervisor shutdown)
	end    bool               // inStop: end the owner once down (removal, shutdown)
	remove bool               // inStop with end: removed by Apply (published as EvRemoved)
	spec   *config.Instance   // inReload, inRestart: run this spec from now on
	down   chan struct{}      // inReload: closed once the process running now has ended (a reload's port holder)
	gate   <-chan struct{}    // inReload: the next start waits until it is closed (its port's holders are down)
	live   *LiveProbe         // inLiveness
	drain  *drainResult       // inDrained
	launch *launchResult      // inLaunched
}

// want is what is wanted of an instance: up or down by the operator's last
// word, or ended (down for good: supervisor shutdown, or removed by Apply).
type want int

const (
	wantUp want = iota
	wantDown
	wantEnd    // down, then the owner ends
	wantRemove // down, then the owner ends and EvRemoved is published
)

// Outcome is what a request leads to, as the instance's owner decided it.
type Outcome int

const (
	OutcomeDone     Outcome = iota // nothing to wait for (Note says why: "already ready", …)
	OutcomeDown                    // it goes down: EvStopped ends the wait
	OutcomeUp                      // a new process starts: its EvReady ends the wait
	OutcomeCurrent                 // its current process is loading: its EvReady ends the wait
	OutcomeKeptDown                // a reload's new spec is recorded; the operator keeps it down
)

// Decision is an owner's answer to a request: the state it saw, what it
// decided, and the sequence number of the instance's last event before the
// request, so that the caller follows only what came of it.
type Decision struct {
	Saw  State
	Now  State // the state it moved to
	Will Outcome
	Note string
	Seq  uint64
	Req  uint64
}

// owner is the one goroutine that owns an instance: it alone starts,
// signals and judges its process and changes its state.
type owner struct {
	d      Deps
	policy Policy
	pub    func(Event)
	inbox  chan msg
	done   chan struct{} // closed when the owner has ended
	gone   atomic.Bool   // removed: set before EvRemoved is published, so no snapshot lists it after

	// Owned by the goroutine.
	spec      config.Instance
	restart   RestartPolicy
	sink      *sink
	state     State
	want      want
	seq       uint64  // events published so far
	will      Outcome // what the input being handled leads to (operator inputs)
	note      string  // with OutcomeDone: why nothing is to be waited for
	reason    Reason  // why the current process is ending (None while it runs unasked)
	lastWhy   Reason  // why the last process ended, or the last start failed: what status shows
	proc      Process
	exit      exitInfo      // flushing: the process that exited, judged once its output is in
	startNext bool          // flushing: an operator start, restart or reload came: start again at once
	stopGrace time.Duration // launching: the shortest grace a stop asked for, for the process on its way
	startedAt time.Time
	stopProbe context.CancelFunc
	probeCtx  context.Context    // of the current process's probes; ends with stopProbe
	stopWatch context.CancelFunc // ends the watchdog alone
	live      liveState
	timer     <-chan time.Time
	timerIn   input
	killAt    time.Time
	killGrace time.Duration
	streak    []Reason // why each of the last quick ends in a row ended (crash-loop count)
	restarts  int
	lastExit  string
	lastErr   error
	pending   []Event         // emitted while handling an input
	downs     []chan struct{} // closed once the current process has ended (msg.down)
	gate      <-chan struct{} // the next start waits for it (msg.gate)

	// What status readers see, written by the goroutine under mu.
	mu   sync.Mutex
	snap Snapshot
	log  *logfile.Log // the instance's log, for `logs`; nil when it could not be opened
}

// Snapshot is an instance as last observed.
type Snapshot struct {
	Spec       config.Instance
	State      State
	WantUp     bool
	PID        int
	Restarts   int
	StartedAt  time.Time
	LastExit   string // "" until a process has ended
	LastReason Reason
	Err        string // why it could not start, if so
	// The watchdog: liveness probes failed in a row, and what the last
	// failed one said.
	ProbeFailures int
	ProbeErr      string
}

var errEnded = errors.New("instance is no longer supervised")

func newOwner(spec config.Instance, d Deps, policy Policy, pub func(Event)) *owner {
	restart, _ := ParsePolicy(spec.Restart) // checked by the supervisor before
	o := &owner{d: d, policy: policy, pub: pub, inbox: make(chan msg, 16), done: make(chan struct{}),
		spec: spec, restart: restart, want: wantDown}
	o.snap = Snapshot{Spec: spec}
	go o.run()
	return o
}

// send hands m to the owner; it fails once the owner has ended.
func (o *owner) send(m msg) error {
	select {
	case o.inbox <- m:
		return nil
	case <-o.done:
		return errEnded
	}
}

func (o *owner) snapshot() Snapshot {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.snap
}

func (o *owner) run() {
	defer close(o.done)
	for {
		var exited <-chan syscall.WaitStatus
		if o.proc != nil {
			exited = o.proc.Exited()
		}
		var flushed <-chan struct{}
		if o.state == flushing {
			flushed = o.sink.copied()
		}
		var m msg
		select {
		case m = <-o.inbox:
		case ws := <-exited:
			m = msg{in: inExited, ws: ws, pid: o.proc.PID()}
		case <-flushed:
			m = msg{in: inFlushed, pid: o.exit.pid}
		case <-o.timer:
			m = msg{in: o.timerIn}
			o.timer = nil
		}
		o.handle(m)
		if o.want >= wantEnd && o.proc == nil && o.state != launching && o.state != flushing {
			o.finish()
			return
		}
	}
}

// handle runs the transition table for one input.
func (o *owner) handle(m msg) {
	switch m.in {
	case inReady, inLiveness, inDrained:
		if o.proc == nil || m.pid != o.proc.PID() {
			if m.reply != nil {
				m.reply <- Decision{Saw: o.state, Now: o.state, Note: "about a process that is gone", Seq: o.seq}
			}
			return
		}
	}
	if m.spec != nil {
		o.spec = *m.spec
		o.restart, _ = ParsePolicy(m.spec.Restart) // checked by the supervisor before
	}
	if m.gate != nil {
		o.gate = m.gate
	}
	if m.down != nil {
		// Asked before the transition: a reload may launch the new
		// process at once, and the old one is what holds the port.
		if o.proc == nil && o.state != launching && o.state != flushing {
			close(m.down)
		} else {
			o.downs = append(o.downs, m.down)
		}
	}
	if m.end {
		o.want = max(o.want, wantEnd)
		if m.remove {
			o.want = wantRemove
		}
	}
	before, saw := o.seq, o.state
	o.will, o.note = OutcomeDone, ""
	if m.op != OpNone {
		o.emit(Event{Kind: EvRequested, State: o.state.public(), Op: m.op, Req: m.req})
	}
	o.state = transitions[o.state][m.in](o, m)
	// Status first, then the answer and the events: whoever reacts to
	// either sees the state it led to.
	o.publishSnapshot()
	if m.reply != nil {
		m.reply <- Decision{Saw: saw, Now: o.state, Will: o.will, Note: o.note, Seq: before, Req: m.req}
	}
	for _, e := range o.pending {
		o.pub(e)
	}
	o.pending = o.pending[:0]
}

func (o *owner) publishSnapshot() {
	s := Snapshot{Spec: o.spec, State: o.state.public(), WantUp: o.want == wantUp, Restarts: o.restarts,
		LastExit: o.lastExit, LastReason: o.reason, ProbeFailures: o.live.fails}
	if s.LastReason == ReasonNone { // running again: still say why the last one ended
		s.LastReason = o.lastWhy
	}
	if o.live.err != nil {
		s.ProbeErr = o.live.err.Error()
	}
	if o.proc != nil {
		s.PID, s.StartedAt = o.proc.PID(), o.startedAt
	}
	if o.lastErr != nil {
		s.Err = o.lastErr.Error()
	}
	o.mu.Lock()
	o.snap = s
	o.mu.Unlock()
}

// emit queues an event about this instance, filling in who and when;
// handle publishes it. e.State is the state the event leaves it in.
func (o *owner) emit(e Event) {
	o.seq++
	e.Seq, e.Time, e.Instance, e.URL, e.LogFile = o.seq, o.d.Clock.Now(), o.spec.Name, o.spec.URL, o.spec.LogFile
	o.pending = append(o.pending, e)
}

func (o *owner) setTimer(d time.Duration, in input) {
	o.timer, o.timerIn = o.d.Clock.After(d), in
}

// processGone tells those waiting for the current process to end (a
// reload's instances that take its port) that it has.
func (o *owner) processGone() {
	for _, c := range o.downs {
		close(c)
	}
	o.downs = nil
}

func (o *owner) finish() {
	o.processGone()
	if o.sink != nil {
		// The last process's output is in (or its flush deadline passed):
		// closing flushes the file; a copier still held open by a
		// grandchild finds the log closed and drops what comes.
		o.sink.log.Close()
	}
	if o.want == wantRemove {
		o.gone.Store(true)
		o.emit(Event{Kind: EvRemoved, State: Stopped})
		o.pub(o.pending[0])
	}
}

// The actions of the transition table.

func (o *owner) launchFresh(msg) State {
	o.want, o.streak, o.will = wantUp, nil, OutcomeUp
	return o.launch()
}

// alreadyUp answers a start of a ready instance.
func (o *owner) alreadyUp(msg) State {
	o.want, o.note = wantUp, "already ready"
	return o.state
}

// alreadyDown answers a stop of a stopped instance.
func (o *owner) alreadyDown(m msg) State {
	if o.want < wantEnd {
		o.want = wantDown
	}
	o.note = "already stopped"
	return o.state
}

// awaitReady answers a start of a loading instance: its current process.
func (o *owner) awaitReady(msg) State {
	o.want, o.will = wantUp, OutcomeCurrent
	return o.state
}

// reloadIdle takes a reload's spec while no process runs: started when
// wanted up (a clean exit under on-failure), else kept down.
func (o *owner) reloadIdle(m msg) State {
	if o.want != wantUp {
		o.will = OutcomeKeptDown
		return o.state
	}
	return o.launchFresh(m)
}

// reloadRunning restarts a running instance on its new spec.
func (o *owner) reloadRunning(m msg) State {
	o.will, o.streak = OutcomeUp, nil
	return o.stopOrDrain(ReasonRestartRequested, 0)
}

// reloadStopping takes a reload's spec while the process ends: what follows
// is what was wanted before (the spec is used at the next start).
func (o *owner) reloadStopping(msg) State {
	o.will = OutcomeKeptDown
	if o.want == wantUp {
		o.will = OutcomeUp
	}
	return o.state
}

func (o *owner) launchAgain(msg) State { return o.launch() }

// launch hands the start to the starter, a goroutine of its own: opening
// the log (a hung NFS mount), the port check (a walk of /proc) and the
// exec may each take their time, and the owner keeps answering meanwhile.
// Its result comes back as inLaunched; until then the instance is
// launching (seen as starting, with no pid).
func (o *owner) launch() State {
	o.timer, o.reason, o.stopGrace = nil, ReasonNone, 0
	spec, cur, stdout, now, gate := o.spec, o.sink, o.stdout(), o.d.Clock.Now(), o.gate
	o.sink, o.gate = nil, nil // the starter's until it answers
	go func() {
		r := o.start(spec, cur, stdout, now, gate)
		_ = o.send(msg{in: inLaunched, launch: &r}) // the owner does not end while launching
	}()
	return launching
}

// launchResult is what the starter did.
type launchResult struct {
	spec   config.Instance // the spec it started
	sink   *sink           // the instance's log from now on; nil: it could not be opened
	proc   Process         // nil: not started, for reason
	reason Reason          // ReasonPortTaken or ReasonStartFailed
	err    error
}

// start is the starter: it runs outside the owner and touches none of its
// fields. It opens spec's log (keeping cur when the file is the same),
// waits for gate (closed once the other instances of a reload that held
// its port are down), checks the port, and starts the process writing
// into the log.
func (o *owner) start(spec config.Instance, cur *sink, stdout io.Writer, now time.Time, gate <-chan struct{}) launchResult {
	r := launchResult{spec: spec, reason: ReasonStartFailed}
	s, err := o.openLog(spec, cur)
	if r.sink, r.err = s, err; err != nil {
		return r // the event and the status row name the instance
	}
	if gate != nil {
		<-gate // closed by a bounded wait (Reload)
	}
	if err := o.d.CheckPort(spec); err != nil {
		r.reason, r.err = ReasonPortTaken, err
		return r
	}
	w, err := s.attach(stdout)
	if err != nil {
		r.err = err
		return r
	}
	s.notef("%s starting %s %s", now.Format(time.RFC3339), spec.Executable, config.ShellJoin(config.RedactArgs(spec.Cmd)))
	p, err := o.d.Starter.Start(spec, w)
	w.Close()
	if err != nil {
		var nf *launch.NotFoundError
		if !errors.As(err, &nf) {
			err = fmt.Errorf("start %s: %w", spec.Executable, err)
		}
		r.err = err
		return r
	}
	r.proc = p
	return r
}

// launched takes the starter's result. Requests that came meanwhile have
// their way now: a stop stops the new process at once, a changed spec
// restarts it.
func (o *owner) launched(m msg) State {
	r := m.launch
	o.sink = r.sink
	var l *logfile.Log
	if r.sink != nil {
		l = r.sink.log
	}
	o.setLog(l)
	if r.proc == nil {
		o.processGone() // the process on its way never came
		switch {
		case o.want != wantUp:
			// Stopped while it was on its way: down, as asked — and the
			// start failed all the same, which is said, not swallowed.
			o.reason, o.lastWhy, o.lastErr = ReasonStopRequested, ReasonStopRequested, r.err
			o.emit(Event{Kind: EvStopped, State: Stopped, Reason: ReasonStopRequested, Err: r.err})
			return Stopped
		case r.reason == ReasonPortTaken:
			return o.fail(ReasonPortTaken, r.err)
		}
		return o.startFailed(r.err)
	}
	p := r.proc
	o.proc, o.startedAt, o.lastErr = p, o.d.Clock.Now(), nil
	ctx, cancel := context.WithCancel(context.Background())
	o.stopProbe, o.probeCtx, o.stopWatch = cancel, ctx, func() {}
	o.live = liveState{}
	pid := p.PID()
	go o.d.Probe(ctx, o.spec, pid, func(Probe) { _ = o.send(msg{in: inReady, pid: pid}) })
	if o.spec.ReadyTimeout > 0 { // 0: no deadline
		o.setTimer(o.spec.ReadyTimeout, inReadyDeadline)
	}
	o.emit(Event{Kind: EvStarted, State: Starting, PID: pid})
	switch {
	case o.want != wantUp:
		return o.terminate(ReasonStopRequested, o.stopGrace)
	case !r.spec.Same(o.spec):
		return o.terminate(ReasonRestartRequested, 0)
	}
	return Starting
}

// wantWhileLaunching records the operator's word while the process is on
// its way; launched acts on it.
func (o *owner) wantWhileLaunching(m msg) State {
	switch {
	case m.in == inStop:
		o.want, o.will = max(o.want, wantDown), OutcomeDown
		if m.grace > 0 && (o.stopGrace == 0 || m.grace < o.stopGrace) {
			o.stopGrace = m.grace
		}
	case m.in == inReload && o.want == wantUp:
		o.will = OutcomeUp // launched restarts it on the new spec
	case m.in == inReload:
		o.will = OutcomeKeptDown
	case o.want >= wantEnd:
		o.note = "being removed" // the supervisor refuses these before they come
	default: // start, restart: the process on its way is a fresh one
		o.want, o.streak, o.will = wantUp, nil, OutcomeUp
	}
	return o.state
}

// startFailed handles a start that failed. One that failed for lack of
// descriptors, memory or processes (a flood of connections once left
// "pipe2: too many open files") is not the instance's fault: it is retried
// as a crash would be, by the restart policy and crash-loop count, instead
// of leaving the instance failed after the shortage has passed.
func (o *owner) startFailed(err error) State {
	if !shortOfResources(err) || o.restart == RestartNever || o.want != wantUp {
		return o.fail(ReasonStartFailed, err)
	}
	o.reason, o.lastWhy, o.lastErr = ReasonStartFailed, ReasonStartFailed, err
	o.streak = append(o.streak, ReasonStartFailed)
	quick := len(o.streak)
	if quick >= o.policy.CrashLoop {
		return o.fail(ReasonStartFailed, err)
	}
	delay := o.backoff(quick)
	o.restarts++
	o.setTimer(delay, inBackoffDone)
	o.emit(Event{Kind: EvRestarting, State: Restarting, Delay: delay, Reason: ReasonStartFailed, Err: err})
	return Restarting
}

// backoff is the delay before the next start after quick failures in a
// row: doubling from BackoffMin, at most BackoffMax.
func (o *owner) backoff(quick int) time.Duration {
	if quick > 30 {
		return o.policy.BackoffMax
	}
	return min(o.policy.BackoffMin<<(quick-1), o.policy.BackoffMax)
}

func shortOfResources(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM, syscall.EAGAIN} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (o *owner) fail(r Reason, err error) State {
	o.reason, o.lastWhy, o.lastErr = r, r, err
	o.emit(Event{Kind: EvFailed, State: Failed, Reason: r, Err: err})
	return Failed
}

func (o *owner) ready(msg) State {
	o.timer = nil
	o.emit(Event{Kind: EvReady, State: Ready, PID: o.proc.PID(), Took: o.d.Clock.Now().Sub(o.startedAt)})
	o.startWatch()
	return Ready
}

func (o *owner) stopRequested(m msg) State {
	o.want, o.will = max(o.want, wantDown), OutcomeDown
	return o.stopOrDrain(ReasonStopRequested, m.grace)
}

func (o *owner) restartRequested(m msg) State {
	o.want, o.streak, o.will = wantUp, nil, OutcomeUp
	return o.stopOrDrain(ReasonRestartRequested, 0)
}

func (o *owner) loadTimeout(m msg) State {
	o.emit(Event{Kind: EvNotReady, State: Stopping, PID: o.proc.PID(), Err: fmt.Errorf("not ready after %s", o.spec.ReadyTimeout)})
	return o.terminate(ReasonLoadTimeout, 0)
}

// terminate sends SIGTERM to the process group and arms the SIGKILL timer.
func (o *owner) terminate(r Reason, grace time.Duration) State {
	o.reason = r
	o.stopProbe()
	_ = o.proc.Signal(syscall.SIGTERM)
	o.armKill(grace)
	return Stopping
}

// armKill sets the SIGKILL deadline: the instance's stop_timeout, or a
// shorter grace; a later request never pushes an earlier deadline back.
func (o *owner) armKill(grace time.Duration) {
	g := o.spec.StopTimeout
	if grace > 0 && grace < g {
		g = grace
	}
	at := o.d.Clock.Now().Add(g)
	if o.timer != nil && o.timerIn == inKillDeadline && !at.Before(o.killAt) {
		return
	}
	o.killAt, o.killGrace = at, g
	o.setTimer(g, inKillDeadline)
}

// wantWhileStopping records the operator's word while the process ends:
// the last of stop, start and restart wins, and the exit decides.
func (o *owner) wantWhileStopping(m msg) State {
	switch {
	case m.in == inStop:
		o.want, o.reason, o.will = max(o.want, wantDown), ReasonStopRequested, OutcomeDown
		o.armKill(m.grace)
	case o.want >= wantEnd:
		o.note = "being removed" // the supervisor refuses these before they come
	default:
		o.want, o.will = wantUp, OutcomeUp
		if o.reason == ReasonStopRequested {
			o.reason = ReasonRestartRequested
		}
	}
	return o.state
}

func (o *owner) kill(msg) State {
	_ = o.proc.Signal(syscall.SIGKILL)
	o.emit(Event{Kind: EvKilled, State: Stopping, PID: o.proc.PID(), Grace: o.killGrace})
	return Stopping
}

func (o *owner) stopIdle(m msg) State {
	o.want, o.timer, o.will = max(o.want, wantDown), nil, OutcomeDown
	if m.end && o.state == Failed {
		o.will, o.note = OutcomeDone, "failed" // shutdown or removal: it stays failed, and nothing was stopped
		return Failed
	}
	o.emit(Event{Kind: EvStopped, State: Stopped})
	return Stopped
}

// exitInfo is a process that exited, waiting to be judged.
type exitInfo struct {
	pid int
	ws  syscall.WaitStatus
	ran time.Duration
}

// flushLimit bounds the wait for an exited process's output: a daemonised
// grandchild may hold its pipe open forever.
const flushLimit = 500 * time.Millisecond

// exited takes the end of the process: what is left of its group is
// killed and its probes end at once. The exit is judged once its output
// is all in the log (EOF on its pipe, inFlushed) or flushLimit passed,
// so that the log, the crash-loop tail and `logs` after EvStopped hold
// all of it; the owner does not wait for that here.
func (o *owner) exited(m msg) State {
	// What is left of its group (helpers it forked) goes with it: it
	// would keep the port or the GPU.
	_ = o.proc.Signal(syscall.SIGKILL)
	o.exit = exitInfo{pid: o.proc.PID(), ws: m.ws, ran: o.d.Clock.Now().Sub(o.startedAt)}
	o.proc, o.timer, o.startNext = nil, nil, false
	o.stopProbe()
	o.lastExit = describeExit(m.ws)
	if o.reason == ReasonNone { // unasked: a clean exit is not a crash
		o.reason = ReasonCrash
		if m.ws.Exited() && m.ws.ExitStatus() == 0 {
			o.reason = ReasonExited
		}
	}
	select {
	case <-o.sink.copied():
		return o.judgeExit()
	default:
	}
	o.setTimer(flushLimit, inFlushDeadline)
	return flushing
}

// wantWhileFlushing records the operator's word while the exited
// process's output is still coming: the exit is judged with it.
func (o *owner) wantWhileFlushing(m msg) State {
	switch {
	case m.in == inStop:
		o.want, o.will, o.startNext = max(o.want, wantDown), OutcomeDown, false
	case m.in == inReload && o.want == wantUp:
		o.will, o.startNext = OutcomeUp, true // as a reload of a restarting or failed instance
	case m.in == inReload:
		o.will = OutcomeKeptDown
	case o.want >= wantEnd:
		o.note = "being removed" // the supervisor refuses these before they come
	default: // start, restart: it starts again at once, whatever the policy
		o.want, o.streak, o.will, o.startNext = wantUp, nil, OutcomeUp, true
	}
	return o.state
}

// flushed judges the exit once its output is in, or its time is up. Up,
// the output is given up: what still holds the pipe is outside the group
// (killed at the exit), and entry must not keep a descriptor for each.
func (o *owner) flushed(m msg) State {
	o.timer = nil
	if m.in == inFlushDeadline {
		if holders, ok := o.sink.abandon(); ok {
			who := "a process /proc does not show"
			if len(holders) > 0 {
				who = strings.Join(holders, ", ")
			}
			o.sink.notef("%s output of pid %d still held open %s after it exited, by %s outside its process group; no longer read",
				o.d.Clock.Now().Format(time.RFC3339), o.exit.pid, flushLimit, who)
		}
	}
	return o.judgeExit()
}

// judgeExit decides what follows the end of the process, from why it
// ended, what the operator wants, the restart policy and the crash count.
func (o *owner) judgeExit() State {
	o.processGone() // its output is in: its group is down, its port free
	pid, ran := o.exit.pid, o.exit.ran
	o.lastWhy = o.reason
	ev := Event{Kind: EvExited, PID: pid, Exit: o.lastExit, Code: ExitCode(o.exit.ws), Ran: ran, Reason: o.reason}
	stopped := func() State {
		ev.State = Stopped
		o.emit(ev)
		o.emit(Event{Kind: EvStopped, State: Stopped, Exit: o.lastExit, Reason: o.reason})
		return Stopped
	}
	if o.want != wantUp {
		return stopped()
	}
	if o.reason == ReasonRestartRequested || o.startNext {
		ev.State = Starting
		o.emit(ev)
		return o.launch()
	}
	if o.reason == ReasonStopRequested || o.reason == ReasonExited && o.restart != RestartAlways {
		return stopped()
	}
	if o.restart == RestartNever {
		ev.State = Failed
		o.emit(ev)
		o.emit(Event{Kind: EvFailed, State: Failed, Reason: o.reason, Exit: o.lastExit})
		return Failed
	}
	if ran >= o.policy.QuickCrash {
		o.streak = o.streak[:0]
	}
	o.streak = append(o.streak, o.reason)
	quick := len(o.streak)
	if quick >= o.policy.CrashLoop {
		ev.State = Failed
		o.emit(ev)
		o.emit(Event{Kind: EvFailed, State: Failed, Reason: o.reason, Exit: o.lastExit, Quick: quick,
			Loop: describeLoop(o.streak), LogTail: o.sink.tail(o.policy.LogTailLines)})
		return Failed
	}
	delay := o.backoff(quick)
	o.restarts++
	o.setTimer(delay, inBackoffDone)
	ev.State = Restarting
	o.emit(ev)
	o.emit(Event{Kind: EvRestarting, State: Restarting, Delay: delay, Reason: o.reason, Exit: o.lastExit})
	return Restarting
}
