// Package router is llamaboot's one OpenAI-compatible endpoint in front of
// the supervised llama-server instances: requests are routed by their
// model field (an instance's name or alias, or a name an instance in
// llama.cpp's router mode lists), on-demand instances are started by the
// first request and stopped when idle, groups bound how many run at once.
//
// The router is a client of the supervisor: it never starts or signals a
// process itself, it asks (Backend) and follows the supervisor's events.
// Its state (sched) changes one input at a time; handlers ask it for a verdict and
// proxy with httputil.ReverseProxy.
package router

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llamaboot/llamaboot/internal/connlimit"
	"github.com/llamaboot/llamaboot/internal/printer"
	"github.com/llamaboot/llamaboot/internal/promtext"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

// Backend is what the router needs of the supervisor.
type Backend interface {
	// Start asks for the instance to run; its readiness (or why not)
	// comes as events.
	Start(name string) error
	// Stop asks for the instance to be drained and stopped.
	Stop(name string) error
	Subscribe() (<-chan supervise.Event, func())
	Snapshots() []supervise.Snapshot
}

// Supervisor adapts the supervisor to Backend.
func Supervisor(s *supervise.Supervisor) Backend { return supervisorBackend{s} }

type supervisorBackend struct{ *supervise.Supervisor }

func (b supervisorBackend) Start(name string) error {
	_, err := b.Control(name, supervise.OpStart)
	return err
}
func (b supervisorBackend) Stop(name string) error {
	_, err := b.Control(name, supervise.OpStop)
	return err
}

// Options tune a Router. Zero fields take defaults.
type Options struct {
	P *printer.Printer // what the router did: starts, idle stops, evictions (never keys)
	// MaxBody bounds a request body (read once to find the model).
	MaxBody int64
	// Metrics, when set, counts requests, latency, starts and stops.
	Metrics *Metrics
}

// DefaultMaxBody bounds request bodies: images in chat requests come
// base64 encoded.
const DefaultMaxBody = 64 << 20

// Router routes requests to instances.
type Router struct {
	b      Backend
	o      Options
	table  atomic.Pointer[Table]
	proxy  *proxy
	remote *remoteNames

	// mu serializes every decision: the scheduler's state is touched only
	// under it, by handlers (acquire, release) and by the loop (events,
	// timers), one input at a time.
	mu     sync.Mutex
	s      *sched
	armed  time.Time // when the loop's timer fires next
	closed bool
	gauges map[string][2]*promtext.Value64 // in flight, queued, by instance

	wake    chan struct{} // the next deadline changed
	stop    func()
	done    chan struct{} // closed when the loop has ended
	closeMu sync.Once
}

// New starts a router on table t. Close it when done.
func New(b Backend, t *Table, o Options) *Router {
	if o.P == nil {
		o.P = printer.Discard()
	}
	if o.MaxBody == 0 {
		o.MaxBody = DefaultMaxBody
	}
	r := &Router{b: b, o: o, wake: make(chan struct{}, 1), done: make(chan struct{}), gauges: map[string][2]*promtext.Value64{}}
	r.table.Store(t)
	r.proxy = newProxy(o.P)
	r.remote = newRemoteNames()
	events, cancel := b.Subscribe()
	r.s = newSched(t, b.Snapshots(), time.Now())
	ctx, stop := context.WithCancel(context.Background())
	r.stop = func() {
		stop()
		cancel()
	}
	go r.loop(ctx, events)
	// Instances in llama.cpp's router mode that already run list their names now.
	for _, tg := range t.routerModes() {
		for _, sn := range b.Snapshots() {
			if sn.Spec.Name == tg.Name && sn.State == supervise.Ready {
				go r.discover(tg)
			}
		}
	}
	return r
}

// Swap routes by t from now on (a reload); requests under way keep the
// table they arrived under.
func (r *Router) Swap(t *Table) {
	snaps := r.b.Snapshots()
	r.table.Store(t)
	r.do("", func(s *sched) []action {
		s.swap(t, snaps, time.Now())
		return s.pump(time.Now())
	})
	for _, tg := range t.routerModes() {
		go r.discover(tg)
	}
}

// Close stops the router; requests waiting are refused.
func (r *Router) Close() {
	r.closeMu.Do(func() {
		r.mu.Lock()
		r.closed = true
		for _, i := range r.s.inst {
			r.s.refuseAll(i, refuse(http.StatusServiceUnavailable, "unavailable_error", "the router is shutting down"))
		}
		r.mu.Unlock()
		r.stop()
		<-r.done
	})
}

// do runs one input through the scheduler and asks the supervisor for
// what it decided; name is the instance it is about ("": any). False once
// the router is closed.
func (r *Router) do(name string, f func(*sched) []action) bool {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return false
	}
	acts := f(r.s)
	r.setGauges(name)
	next := r.s.next()
	poke := !next.Equal(r.armed)
	r.mu.Unlock()
	r.run(acts)
	if poke {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// loop follows the supervisor's events and fires the scheduler's timers.
func (r *Router) loop(ctx context.Context, events <-chan supervise.Event) {
	defer close(r.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			r.do("", func(s *sched) []action { return s.event(time.Now(), e) })
			if e.Kind == supervise.EvReady {
				if tg := r.table.Load().targets[e.Instance]; tg != nil && tg.RouterMode {
					go r.discover(tg)
				}
			}
		case <-timer.C:
			r.do("", func(s *sched) []action { return s.tick(time.Now()) })
		case <-r.wake:
		}
		r.mu.Lock()
		r.armed = r.s.next()
		at := r.armed
		r.mu.Unlock()
		timer.Stop()
		if !at.IsZero() {
			timer.Reset(max(time.Until(at), time.Millisecond))
		}
	}
}

// run asks the supervisor for what the scheduler decided, off the
// caller's path (a request to a busy owner must not hold up routing).
func (r *Router) run(acts []action) {
	for _, a := range acts {
		m := r.o.Metrics
		switch a.kind {
		case actStart:
			r.o.P.Stepf("router: starting %s for a request", a.name)
			m.started(a.name)
			go func() {
				if err := r.b.Start(a.name); err != nil {
					r.o.P.Errorf("router: start of %s: %v", a.name, err)
					r.do(a.name, func(s *sched) []action { return s.startFailed(time.Now(), a.name, err) })
				}
			}()
		case actNote:
			r.o.P.Stepf("%s", a.why)
		case actStop:
			switch {
			case a.bound != "":
				r.o.P.Stepf("router: stopping %s, the least recently used instance of group %s, to keep the group to its max_loaded now that %s was started", a.name, a.bound, a.forName)
			case a.why == "evicted":
				r.o.P.Stepf("router: stopping %s, the least recently used idle instance of its group, to make room for %s", a.name, a.forName)
			default:
				r.o.P.Stepf("router: stopping %s: idle for its idle_timeout", a.name)
			}
			m.stopped(a.name, a.why)
			go func() {
				if err := r.b.Stop(a.name); err != nil && !errors.Is(err, supervise.ErrShuttingDown) {
					r.o.P.Errorf("router: stop of %s: %v", a.name, err)
				}
			}()
		}
	}
}

// setGauges updates the in-flight and queued gauges of name (every
// instance when ""); r.mu is held.
func (r *Router) setGauges(name string) {
	m := r.o.Metrics
	if m == nil {
		return
	}
	set := func(n string, i *istate) {
		g, ok := r.gauges[n]
		if !ok {
			g = [2]*promtext.Value64{m.inFlight.With(n), m.queued.With(n)}
			r.gauges[n] = g
		}
		g[0].Set(float64(i.inFlight))
		g[1].Set(float64(len(i.waiters)))
	}
	if name != "" {
		if i := r.s.inst[name]; i != nil {
			set(name, i)
		}
		return
	}
	for n, i := range r.s.inst {
		set(n, i)
	}
}

// acquire asks for a verdict on a request for instance name, waiting
// (until ctx ends) while it starts.
func (r *Router) acquire(ctx context.Context, name string) verdict {
	var v verdict
	var w *waiter
	if !r.do(name, func(s *sched) []action {
		var acts []action
		v, w, acts = s.acquire(time.Now(), name)
		return acts
	}) {
		return refuse(http.StatusServiceUnavailable, "unavailable_error", "the router is shutting down")
	}
	if w == nil {
		return v
	}
	select {
	case v := <-w.reply:
		return v
	case <-ctx.Done():
		cancelled := false
		r.do(name, func(s *sched) []action { cancelled = s.cancel(w); return nil })
		if !cancelled {
			// Answered meanwhile: a served verdict holds a slot to give back.
			if v := <-w.reply; v.serve {
				r.release(name)
			}
		}
		return refuse(499, "cancelled", "the client went away")
	}
}

func (r *Router) release(name string) {
	r.do(name, func(s *sched) []action { return s.release(time.Now(), name) })
}

// Status is one instance as the router sees it, for llamaboot status.
type Status struct {
	Instance string    `json:"instance"`
	Names    []string  `json:"names"` // routed names: its own, aliases, and what a router-mode server lists
	State    string    `json:"state"` // loaded, loading, unloaded, unloading, stopped, stopped by the operator, failed
	InFlight int       `json:"in_flight"`
	Queued   int       `json:"queued"`
	LastUse  time.Time `json:"last_use,omitzero"`
}

// Status reports every routed instance, in config order.
func (r *Router) Status() []Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	var st []Status
	for _, tg := range r.s.table.Targets() {
		i := r.s.inst[tg.Name]
		if i == nil {
			continue
		}
		names := append([]string{tg.Name}, tg.Aliases...)
		names = append(names, r.remote.of(tg.Name)...)
		var last time.Time // never used: none (status shows -)
		if i.used {
			last = i.lastUse
		}
		st = append(st, Status{Instance: tg.Name, Names: names, State: r.s.stateWord(i), InFlight: i.inFlight, Queued: len(i.waiters), LastUse: last})
	}
	return st
}

// OperatorStopped says whether the operator stopped instance name (and
// did not start it again): the supervisor sees the router's idle stops and
// the operator's alike.
func (r *Router) OperatorStopped(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := r.s.inst[name]
	return i != nil && i.opStop
}

// Server is the router, listening.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Limits harden the listener against slow or greedy clients: it runs in
// PID 1, whose descriptors must stay enough to restart an instance.
var (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
)

// ConnLimits bound the router's client connections: many clients (or one
// proxy in front) may hold many, but never PID 1's last descriptors.
var ConnLimits = connlimit.Limits{Max: 1024, Headroom: 128}

// Listen serves the router on addr until Close.
func (r *Router) Listen(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{ln: connlimit.New(ln, ConnLimits, connlimit.IPPeer), srv: &http.Server{Handler: r.Handler(),
		ReadHeaderTimeout: readHeaderTimeout, IdleTimeout: idleTimeout, MaxHeaderBytes: 64 << 10,
		ErrorLog: r.proxy.log}}
	go s.srv.Serve(s.ln)
	return s, nil
}

// Addr is where the server listens.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops listening and ends open connections.
func (s *Server) Close() { _ = s.srv.Close() }

// Report is the router's part of llamaboot status.
type Report struct {
	Listen    string   `json:"listen"`
	Instances []Status `json:"instances"`
}
