package router

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/llamaboot/llamaboot/internal/supervise"
)

// verdict is the scheduler's answer to a request: serve it now on an
// instance, or refuse it (why, as an HTTP status and an OpenAI error).
type verdict struct {
	serve      bool
	target     *Target
	code       int
	errType    string
	msg        string
	retryAfter int // seconds; 0: no Retry-After
}

func refuse(code int, errType, format string, args ...any) verdict {
	return verdict{code: code, errType: errType, msg: fmt.Sprintf(format, args...)}
}

// waiter is a request waiting for its instance to start.
type waiter struct {
	name     string
	deadline time.Time
	reply    chan verdict // buffered: the scheduler never blocks on it
	answered bool
}

// actionKind is what the scheduler asks of the supervisor.
type actionKind int

const (
	actStart actionKind = iota
	actStop
	actNote // nothing to ask: a line to print (why)
)

// action is one request to the supervisor, with why (for logs and
// metrics): "request" for a start; "idle" or "evicted" for a stop
// ("evicted" with bound set when it keeps a group to its max_loaded after
// a start the router did not ask for).
type action struct {
	kind    actionKind
	name    string
	why     string
	forName string // evicted: the instance it makes room for
	bound   string // evicted to bring this group back to its max_loaded
}

// istate is the router's record of one instance.
type istate struct {
	t        *Target
	state    supervise.State
	why      string // why it failed, or how it stopped
	opStop   bool   // the operator stopped it: refused at once until started again
	ours     string // the router is stopping it: "idle" or "evicted"
	unloaded bool   // the router stopped it: the next request starts it again
	starting bool   // the router asked for a start that has not ended yet
	pending  bool   // wants a start that waits for room in its group
	inFlight int
	lastUse  time.Time // last request, or when it became ready (for idle_timeout and eviction)
	used     bool      // a request was served: lastUse is a use (status shows it)
	upSince  time.Time // when its process last started from down (the newest of a group is never evicted to bound it)
	waiters  []*waiter
}

// sched is the router's state and decisions, driven by one goroutine (the
// loop) and, in tests, by hand with a fake clock. Every method takes the
// time it happens at and returns what to ask of the supervisor.
type sched struct {
	table  *Table
	inst   map[string]*istate
	queued int // waiters of every instance
	// over are the groups running more members than their max_loaded
	// (a member started by the operator or a reload), with when that
	// began and whether the wait for a busy member was said.
	over map[string]*overflow
}

type overflow struct {
	since   time.Time
	said    bool
	waiting bool // for a busy member: tick stops it at since+max_wait
}

func newSched(t *Table, snaps []supervise.Snapshot, now time.Time) *sched {
	s := &sched{inst: map[string]*istate{}, over: map[string]*overflow{}}
	s.swap(t, snaps, now)
	return s
}

// swap takes a new table: instances it keeps keep their state, new ones
// start from the supervisor's snapshot, removed ones are forgotten (their
// waiters refused).
func (s *sched) swap(t *Table, snaps []supervise.Snapshot, now time.Time) {
	s.table = t
	byName := map[string]supervise.Snapshot{}
	for _, sn := range snaps {
		byName[sn.Spec.Name] = sn
	}
	for name, i := range s.inst {
		if tg, ok := t.targets[name]; ok {
			i.t = tg
			continue
		}
		s.refuseAll(i, refuse(http.StatusNotFound, "model_not_found", "%s is no longer configured (the config was reloaded)", name))
		delete(s.inst, name)
	}
	for _, tg := range t.Targets() {
		if _, ok := s.inst[tg.Name]; ok {
			continue
		}
		i := &istate{t: tg, state: supervise.Stopped, lastUse: now}
		if sn, ok := byName[tg.Name]; ok {
			i.state = sn.State
			// Asked to stop before this router knew it: the operator's stop,
			// unless the router may stop it itself (on demand, idle): then a
			// request starts it again.
			stopped := sn.State == supervise.Stopped && !sn.WantUp && sn.LastReason == supervise.ReasonStopRequested
			i.opStop = stopped && !tg.OnDemand && tg.IdleTimeout == 0
			i.unloaded = stopped && !i.opStop
			i.why = snapWhy(sn)
		}
		s.inst[tg.Name] = i
	}
}

func snapWhy(sn supervise.Snapshot) string {
	switch {
	case sn.Err != "":
		return sn.Err
	case sn.LastExit != "":
		return fmt.Sprintf("%s (%s)", sn.LastReason, sn.LastExit)
	}
	return sn.LastReason.String()
}

// acquire answers a request for instance name: serve now, wait (w is
// queued), or refuse.
func (s *sched) acquire(now time.Time, name string) (verdict, *waiter, []action) {
	i := s.inst[name]
	if i == nil {
		return refuse(http.StatusServiceUnavailable, "unavailable_error", "%s is not supervised (yet)", name), nil, nil
	}
	switch {
	case i.opStop:
		return refuse(http.StatusServiceUnavailable, "unavailable_error", "%s was stopped by the operator; llamaboot start %s brings it back", name, name), nil, nil
	case i.state == supervise.Ready && i.ours == "":
		i.inFlight++
		i.lastUse, i.used = now, true
		return verdict{serve: true, target: i.t}, nil, nil
	case i.state == supervise.Failed && !i.starting:
		return refuse(http.StatusServiceUnavailable, "unavailable_error", "%s failed: %s", name, i.why), nil, nil
	case i.state == supervise.Stopped && i.ours == "" && !i.starting && !i.t.OnDemand && !i.unloaded:
		return refuse(http.StatusServiceUnavailable, "unavailable_error", "%s is stopped: %s", name, i.why), nil, nil
	}
	// Starting, restarting, being stopped by us (it starts again after),
	// or down and started on demand: wait, bounded.
	// Each instance has its own queue (as llama-swap and llama.cpp's
	// router let each model's requests wait for it): a burst for one model
	// that is loading does not turn away requests for another.
	if len(i.waiters) >= s.table.MaxQueue {
		v := refuse(http.StatusServiceUnavailable, "unavailable_error", "%s is not loaded and %d request(s) already wait for it (router.max_queue)", name, len(i.waiters))
		v.retryAfter = 1
		return v, nil, nil
	}
	w := &waiter{name: name, deadline: now.Add(s.table.MaxWait), reply: make(chan verdict, 1)}
	i.waiters = append(i.waiters, w)
	s.queued++
	var acts []action
	if i.state == supervise.Stopped && i.ours == "" {
		acts = s.wantStart(now, i)
	}
	return verdict{}, w, acts
}

// wantStart starts i if its group has room, making room by evicting the
// least recently used idle members; otherwise it waits as pending.
func (s *sched) wantStart(now time.Time, i *istate) []action {
	if i.starting {
		return nil
	}
	max, grouped := s.table.Groups[i.t.Group]
	if i.t.Group == "" || !grouped {
		i.starting, i.pending, i.unloaded = true, false, false
		return []action{{kind: actStart, name: i.t.Name, why: "request"}}
	}
	var members []Member
	for _, o := range s.inst {
		if o == i || o.t.Group != i.t.Group {
			continue
		}
		members = append(members, Member{Name: o.t.Name, Loaded: o.state.Running() && !stopping(o.state) || o.state == supervise.Restarting,
			Freeing: stopping(o.state) || o.ours != "", Idle: o.state == supervise.Ready && o.inFlight == 0 && len(o.waiters) == 0,
			LastUse: o.lastUse, Starting: o.starting})
	}
	start, victims := Capacity(i.t.Name, max, members)
	if start {
		i.starting, i.pending, i.unloaded = true, false, false
		return []action{{kind: actStart, name: i.t.Name, why: "request"}}
	}
	i.pending = true
	var acts []action
	for _, v := range victims {
		s.inst[v].ours = "evicted"
		acts = append(acts, action{kind: actStop, name: v, why: "evicted", forName: i.t.Name})
	}
	return acts
}

// release ends a served request.
func (s *sched) release(now time.Time, name string) []action {
	i := s.inst[name]
	if i == nil {
		return nil
	}
	i.inFlight--
	i.lastUse = now
	return s.pump(now)
}

// pump retries the starts that wait for room in their group.
func (s *sched) pump(now time.Time) []action {
	var acts []action
	for _, name := range s.table.order {
		if i := s.inst[name]; i != nil && i.pending && len(i.waiters) > 0 {
			acts = append(acts, s.wantStart(now, i)...)
		} else if i != nil {
			i.pending = false
		}
	}
	return append(acts, s.bound(now)...)
}

// held says whether i holds a place in its group: a process runs (not on
// its way down) or comes, and the router is not stopping it.
func held(i *istate) bool {
	return i.ours == "" && (i.state.Running() && !stopping(i.state) || i.state == supervise.Restarting || i.starting)
}

// bound keeps each group to its max_loaded whatever started its members:
// the router's own starts wait for room (wantStart), but the operator's
// start or a reload may bring one more up. Then the least recently used
// idle members go, never the newest (the one just started) and never one
// with requests in flight or waiting: that one is waited for, at most
// max_wait, then stopped (drained first by the supervisor).
func (s *sched) bound(now time.Time) []action {
	var acts []action
	for g, max := range s.table.Groups {
		var up []*istate
		var newest *istate
		for _, name := range s.table.order {
			i := s.inst[name]
			if i == nil || i.t.Group != g || !held(i) {
				continue
			}
			up = append(up, i)
			if newest == nil || i.upSince.After(newest.upSince) {
				newest = i
			}
		}
		need := len(up) - max
		if need <= 0 {
			delete(s.over, g)
			continue
		}
		o := s.over[g]
		if o == nil {
			o = &overflow{since: now}
			s.over[g] = o
		}
		var idle, busy []*istate
		for _, i := range up {
			switch {
			case i == newest:
			case i.state == supervise.Ready && i.inFlight == 0 && len(i.waiters) == 0:
				idle = append(idle, i)
			case i.state == supervise.Ready:
				busy = append(busy, i)
			}
		}
		byUse := func(a, b *istate) int {
			if c := a.lastUse.Compare(b.lastUse); c != 0 {
				return c
			}
			return strings.Compare(a.t.Name, b.t.Name)
		}
		slices.SortFunc(idle, byUse)
		slices.SortFunc(busy, byUse)
		victims := idle[:min(need, len(idle))]
		o.waiting = false
		if rest := need - len(victims); rest > 0 && len(busy) > 0 {
			if now.Before(o.since.Add(s.table.MaxWait)) {
				o.waiting = true
				if !o.said {
					o.said = true
					acts = append(acts, action{kind: actNote, why: fmt.Sprintf("router: group %s runs %d instance(s), over its max_loaded %d, since %s started: waiting for %s to finish its requests (at most router.max_wait, %s) before stopping it",
						g, len(up), max, newest.t.Name, busy[0].t.Name, s.table.MaxWait)})
				}
			} else {
				victims = append(victims, busy[:min(rest, len(busy))]...)
			}
		}
		for _, v := range victims {
			v.ours = "evicted"
			acts = append(acts, action{kind: actStop, name: v.t.Name, why: "evicted", forName: newest.t.Name, bound: g})
		}
	}
	return acts
}

// cancel takes a waiter out of its queue (its client went away); false
// when it was answered already.
func (s *sched) cancel(w *waiter) bool {
	if w.answered {
		return false
	}
	if i := s.inst[w.name]; i != nil {
		i.waiters = slices.DeleteFunc(i.waiters, func(x *waiter) bool { return x == w })
	}
	w.answered = true
	s.queued--
	return true
}

func (s *sched) answer(i *istate, w *waiter, v verdict) {
	if v.serve {
		i.inFlight++
		i.used = true
	}
	w.answered = true
	s.queued--
	w.reply <- v
}

func (s *sched) refuseAll(i *istate, v verdict) {
	for _, w := range i.waiters {
		s.answer(i, w, v)
	}
	i.waiters, i.pending = nil, false
}

// startFailed is a start the supervisor refused.
func (s *sched) startFailed(now time.Time, name string, err error) []action {
	i := s.inst[name]
	if i == nil {
		return nil
	}
	i.starting = false
	s.refuseAll(i, refuse(http.StatusServiceUnavailable, "unavailable_error", "%s could not be started: %v", name, err))
	return s.pump(now)
}

// event follows the supervisor.
func (s *sched) event(now time.Time, e supervise.Event) []action {
	i := s.inst[e.Instance]
	if i == nil {
		return nil
	}
	if e.Kind == supervise.EvStarted && !i.state.Running() && i.state != supervise.Restarting {
		i.upSince = now
	}
	if e.Kind != supervise.EvRequested {
		i.state = e.State
	}
	switch e.Kind {
	case supervise.EvRequested:
		switch {
		case e.Op == supervise.OpStop && i.ours == "":
			i.opStop, i.starting, i.unloaded = true, false, false
			s.refuseAll(i, refuse(http.StatusServiceUnavailable, "unavailable_error", "%s was stopped by the operator; llamaboot start %s brings it back", i.t.Name, i.t.Name))
		case e.Op != supervise.OpStop:
			i.opStop = false
		}
	case supervise.EvReady:
		i.starting, i.unloaded, i.opStop, i.pending = false, false, false, false
		i.lastUse = now
		for _, w := range i.waiters {
			s.answer(i, w, verdict{serve: true, target: i.t})
		}
		i.waiters = nil
	case supervise.EvStopped:
		i.starting = false
		i.why = "stopped"
		if e.Exit != "" {
			i.why = e.Exit
		}
		if i.ours != "" {
			i.ours, i.unloaded = "", true
		}
		if len(i.waiters) > 0 && !i.opStop {
			if i.t.OnDemand || i.unloaded {
				return append(s.wantStart(now, i), s.pump(now)...)
			}
			s.refuseAll(i, refuse(http.StatusServiceUnavailable, "unavailable_error", "%s stopped: %s", i.t.Name, i.why))
		}
	case supervise.EvFailed:
		i.starting, i.ours = false, ""
		switch {
		case e.Err != nil:
			i.why = e.Err.Error()
		case e.Loop != "":
			i.why = e.Loop
		default:
			i.why = fmt.Sprintf("%s (%s)", e.Exit, e.Reason)
		}
		s.refuseAll(i, refuse(http.StatusServiceUnavailable, "unavailable_error", "%s failed: %s", i.t.Name, i.why))
	case supervise.EvRemoved:
		s.refuseAll(i, refuse(http.StatusServiceUnavailable, "unavailable_error", "%s is no longer supervised", i.t.Name))
	}
	return s.pump(now)
}

// tick answers waiters past max_wait and stops instances idle past their
// idle_timeout.
func (s *sched) tick(now time.Time) []action {
	var acts []action
	for _, name := range s.table.order {
		i := s.inst[name]
		if i == nil {
			continue
		}
		kept := i.waiters[:0]
		for _, w := range i.waiters {
			if now.Before(w.deadline) {
				kept = append(kept, w)
				continue
			}
			v := refuse(http.StatusServiceUnavailable, "unavailable_error", "%s did not become ready within %s (router.max_wait); it is %s", name, s.table.MaxWait, s.stateWord(i))
			v.retryAfter = 5
			s.answer(i, w, v)
		}
		clear(i.waiters[len(kept):])
		i.waiters = kept
		if len(kept) == 0 {
			i.pending = false
		}
		if i.t.IdleTimeout > 0 && i.state == supervise.Ready && i.ours == "" && !i.opStop && i.inFlight == 0 &&
			len(i.waiters) == 0 && !now.Before(i.lastUse.Add(i.t.IdleTimeout)) {
			i.ours = "idle"
			acts = append(acts, action{kind: actStop, name: name, why: "idle"})
		}
	}
	return append(acts, s.bound(now)...)
}

// next is when tick has something to do (zero: nothing ever).
func (s *sched) next() time.Time {
	var at time.Time
	earlier := func(t time.Time) {
		if at.IsZero() || t.Before(at) {
			at = t
		}
	}
	for _, i := range s.inst {
		for _, w := range i.waiters {
			earlier(w.deadline)
		}
		if i.t.IdleTimeout > 0 && i.state == supervise.Ready && i.inFlight == 0 && i.ours == "" {
			earlier(i.lastUse.Add(i.t.IdleTimeout))
		}
	}
	for _, o := range s.over {
		if o.waiting {
			earlier(o.since.Add(s.table.MaxWait))
		}
	}
	return at
}

// stateWord is an instance's state as the model list and status show it.
func (s *sched) stateWord(i *istate) string {
	switch {
	case i.opStop:
		return "stopped by the operator"
	case i.ours != "":
		return "unloading"
	case i.state == supervise.Ready:
		return "loaded"
	case i.state == supervise.Starting || i.state == supervise.Restarting || i.starting:
		return "loading"
	case stopping(i.state):
		return "stopping"
	case i.state == supervise.Failed:
		return "failed"
	case i.t.OnDemand || i.unloaded:
		return "unloaded"
	}
	return "stopped"
}

// stopping says whether an instance is on its way down: draining its busy
// slots, or signalled.
func stopping(s supervise.State) bool { return s == supervise.Draining || s == supervise.Stopping }
