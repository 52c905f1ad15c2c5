package supervise

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/llamaboot/llamaboot/internal/logfile"
	"github.com/llamaboot/llamaboot/internal/printer"
)

// EventKind says what happened to an instance.
type EventKind int

const (
	EvStarted    EventKind = iota // a process was started (PID)
	EvReady                       // it answers /health (Took since start)
	EvNotReady                    // ready_timeout passed (Err); it is being stopped
	EvRequested                   // an operator asked for Op
	EvExited                      // its process ended unasked (Exit, Ran)
	EvRestarting                  // it will start again after Delay
	EvStopped                     // it is down and stays down (Exit, if a process ended; Err, if a start asked meanwhile failed)
	EvFailed                      // gave up: crash loop (Quick, LogTail) or could not start (Err)
	EvKilled                      // SIGKILL after Grace
	EvRemoved                     // no longer supervised
	EvHung                        // the watchdog found it hung (Err says how); SIGKILL to its group
	EvBusy                        // its liveness probes fail but it shows progress (Err): left alone
	EvDrained                     // on stop: its busy slots finished after Took, or Busy were still busy at the drain's end
	EvLogLoss                     // writing its log started (Err) or stopped losing output (Err: a logfile.LossReport)
	EvRefused                     // its server refused the watchdog's key or lack of one (Err); probed by /health alone
	EvLost                        // not about an instance: this reader fell behind and Busy events were dropped
)

var kindNames = [...]string{"started", "ready", "not-ready", "requested", "exited", "restarting", "stopped", "failed", "killed", "removed",
	"hung", "busy", "drained", "log-loss", "refused", "lost"}

func (k EventKind) String() string { return kindNames[k] }

// Event is one thing that happened to one instance, published by its owner
// goroutine to every subscriber (the log printer, --wait and restart
// waiters, tests; metrics later).
type Event struct {
	Time     time.Time
	Instance string
	Kind     EventKind
	State    State  // the instance's state after the event (EvRequested: when asked)
	Reason   Reason // why the process ended, for EvExited/EvStopped/EvFailed
	PID      int
	URL      string
	LogFile  string
	Seq      uint64        // its place among the instance's events (1, 2, …)
	Req      uint64        // EvRequested: the request's number (Decision.Req)
	Op       Op            // EvRequested: start, stop, restart
	Exit     string        // "exit code 3", "killed by SIGKILL"
	Code     int           // EvExited: the exit status as a shell gives it (128+signal)
	Ran      time.Duration // how long the process ran
	Took     time.Duration // EvReady: start to ready; EvDrained: time waited
	Busy     int           // EvDrained: slots still busy when the drain ended
	Silent   bool          // EvDrained: /slots did not answer at the end
	Delay    time.Duration // EvRestarting
	Grace    time.Duration // EvKilled
	Quick    int           // EvFailed after a crash loop
	Loop     string        // EvFailed after a crash loop: what the quick ends were ("3 load timeouts in a row")
	LogTail  string        // EvFailed after a crash loop
	Err      error
}

// Line renders an event as the supervisor's log line.
func (e Event) Line() (text string, isError bool) {
	n := e.Instance
	switch e.Kind {
	case EvStarted:
		return fmt.Sprintf("%s started: pid %d, %s, log %s", n, e.PID, e.URL, e.LogFile), false
	case EvReady:
		return fmt.Sprintf("%s ready after %.2fs at %s", n, e.Took.Seconds(), e.URL), false
	case EvNotReady:
		return fmt.Sprintf("%s: %v; restarting it", n, e.Err), true
	case EvRequested:
		return fmt.Sprintf("%s: %s requested", n, e.Op), false
	case EvExited:
		if e.Reason == ReasonStopRequested || e.Reason == ReasonRestartRequested {
			return "", false // the stopped/started lines say it
		}
		return fmt.Sprintf("%s exited: %s after %.1fs", n, e.Exit, e.Ran.Seconds()), false
	case EvRestarting:
		if e.Err != nil { // a start that failed for lack of resources
			return fmt.Sprintf("%s could not start (%v); restarting in %.1fs", n, e.Err, e.Delay.Seconds()), false
		}
		return fmt.Sprintf("%s restarting in %.1fs", n, e.Delay.Seconds()), false
	case EvStopped:
		if e.Err != nil { // a stop came while it was starting, and the start failed
			return fmt.Sprintf("%s failed to start (%v); stopped, as asked meanwhile", n, e.Err), true
		}
		if e.Exit == "" {
			return fmt.Sprintf("%s stopped", n), false
		}
		return fmt.Sprintf("%s stopped (%s)", n, e.Exit), false
	case EvFailed:
		if e.Quick > 0 {
			return fmt.Sprintf("%s failed: %s; not restarting. Last lines of %s:\n%s", n, e.Loop, e.LogFile, e.LogTail), true
		}
		if e.Err != nil {
			return fmt.Sprintf("%s failed: %v", n, e.Err), true
		}
		return fmt.Sprintf("%s failed: %s (%s); not restarting", n, e.Exit, e.Reason), true
	case EvKilled:
		return fmt.Sprintf("pid %d still running after %s: SIGKILL", e.PID, e.Grace), false
	case EvRemoved:
		return fmt.Sprintf("%s removed from supervision", n), false
	case EvHung:
		return fmt.Sprintf("%s hung: %v; SIGKILL to its process group", n, e.Err), true
	case EvBusy:
		return fmt.Sprintf("%s busy, left alone: %v", n, e.Err), false
	case EvLogLoss:
		var r logfile.LossReport
		return fmt.Sprintf("%s: %v", n, e.Err), errors.As(e.Err, &r) && !r.Resumed
	case EvLost:
		return fmt.Sprintf("%d supervisor events were dropped: their reader fell behind by %d", e.Busy, maxQueue), true
	case EvRefused:
		return fmt.Sprintf("%s: the watchdog cannot see its worker loop: %v; it checks /health alone", n, e.Err), true
	case EvDrained:
		if e.Silent {
			return fmt.Sprintf("%s: /slots did not answer for %.1fs of drain_timeout (busy or stuck); stopping it anyway", n, e.Took.Seconds()), false
		}
		if e.Busy > 0 {
			return fmt.Sprintf("%s: %d slot(s) still busy after %.1fs of drain_timeout; stopping it anyway", n, e.Busy, e.Took.Seconds()), false
		}
		return fmt.Sprintf("%s: waited %.2fs for its busy slot(s) to finish", n, e.Took.Seconds()), false
	}
	return fmt.Sprintf("%s: %s", n, e.Kind), false
}

// Print writes events to p as they come, until the channel closes.
func Print(p *printer.Printer, events <-chan Event) {
	for e := range events {
		text, isErr := e.Line()
		switch {
		case text == "":
		case isErr:
			p.Errorf("%s", strings.TrimRight(text, "\n"))
		default:
			p.Stepf("%s", text)
		}
	}
}

// broadcaster hands every published event to every subscriber, in order,
// without ever blocking the publisher: each subscriber has its own queue.
type broadcaster struct {
	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	closed bool
}

type subscriber struct {
	mu      sync.Mutex
	queue   []Event
	dropped int // events not queued since the reader last caught up
	wake    chan struct{}
	closed  bool
	out     chan Event
	done    chan struct{} // closed when the subscriber cancels
}

// Subscribe returns a channel of every event published from now on, and a
// cancel func. The channel closes after cancel or when the supervisor
// closes its events.
func (b *broadcaster) Subscribe() (<-chan Event, func()) {
	s := &subscriber{wake: make(chan struct{}, 1), out: make(chan Event), done: make(chan struct{})}
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[*subscriber]struct{}{}
	}
	if b.closed {
		s.closed = true
	} else {
		b.subs[s] = struct{}{}
	}
	b.mu.Unlock()
	go s.pump()
	var once sync.Once
	return s.out, func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.subs, s)
			b.mu.Unlock()
			close(s.done)
		})
	}
}

// maxQueue bounds what waits for one reader: a reader that stops reading
// must not grow the supervisor without end.
const maxQueue = 4096

func (b *broadcaster) publish(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		s.mu.Lock()
		if len(s.queue) < maxQueue {
			s.queue = append(s.queue, e)
		} else {
			s.dropped++
		}
		s.mu.Unlock()
		s.poke()
	}
}

// close delivers what is queued, then closes every subscriber's channel.
func (b *broadcaster) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for s := range b.subs {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.poke()
	}
	b.subs = nil
}

func (s *subscriber) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) pump() {
	defer close(s.out)
	for {
		s.mu.Lock()
		q, closed, dropped := s.queue, s.closed, s.dropped
		s.queue, s.dropped = nil, 0
		s.mu.Unlock()
		if dropped > 0 {
			// Said after what was queued before the loss.
			q = append(q, Event{Kind: EvLost, Busy: dropped, Time: time.Now()})
		}
		for _, e := range q {
			select {
			case s.out <- e:
			case <-s.done:
				return
			}
		}
		if len(q) > 0 {
			continue
		}
		if closed {
			return
		}
		select {
		case <-s.wake:
		case <-s.done:
			return
		}
	}
}
