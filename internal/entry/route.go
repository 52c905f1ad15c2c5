package entry

import (
	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/router"
)

// routing is entry's router: one endpoint in front of the instances, run
// while the served config has a [router] table.
type routing struct {
	r      *router.Router
	srv    *router.Server
	listen string
}

// routeBy starts, updates or stops the router as plan's [router] says: a
// reload swaps the routing table whole; a new listen address restarts
// the listener. The error is a listener that could not be opened.
func (e *Entry) routeBy(plan *config.Plan) error {
	e.routerMu.Lock()
	defer e.routerMu.Unlock()
	var want *config.Router
	if plan != nil && plan.Enabled {
		want = plan.Router
	}
	cur := e.routing
	switch {
	case want == nil && cur == nil:
		return nil
	case want == nil:
		e.closeRouting()
		e.p.Stepf("router on %s stopped: the config has no [router] now", cur.listen)
		return nil
	case cur != nil && cur.listen == want.Listen:
		cur.r.Swap(router.NewTable(want, plan.Instances))
		return nil
	case cur != nil:
		// A new address: the same router (what it knows of the
		// instances) on a new listener.
		cur.r.Swap(router.NewTable(want, plan.Instances))
		srv, err := cur.r.Listen(want.Listen)
		if err != nil {
			e.p.Errorf("router: cannot listen on %s (router.listen in %s): %v; it stays on %s", want.Listen, e.o.ConfigPath, err, cur.listen)
			return err
		}
		cur.srv.Close()
		e.p.Stepf("router: moved from %s to http://%s", cur.listen, srv.Addr())
		cur.srv, cur.listen = srv, want.Listen
		return nil
	}
	r := router.New(router.Supervisor(e.sup), router.NewTable(want, plan.Instances), router.Options{P: e.p, Metrics: e.routerMetrics})
	srv, err := r.Listen(want.Listen)
	if err != nil {
		r.Close()
		e.p.Errorf("router: cannot listen on %s (router.listen in %s): %v", want.Listen, e.o.ConfigPath, err)
		return err
	}
	e.routing = &routing{r: r, srv: srv, listen: want.Listen}
	keys := "no API key asked for"
	if len(want.Keys) > 0 {
		keys = "API keys required"
	}
	e.p.Stepf("router: serving %d instance(s) on http://%s (%s)", len(plan.Instances), srv.Addr(), keys)
	return nil
}

// closeRouting stops the router; routerMu is held.
func (e *Entry) closeRouting() {
	if e.routing != nil {
		e.routing.srv.Close()
		e.routing.r.Close()
		e.routing = nil
	}
}

// stopRouter stops the router first when the container stops: no new
// request reaches an instance being stopped.
func (e *Entry) stopRouter() {
	e.routerMu.Lock()
	defer e.routerMu.Unlock()
	e.closeRouting()
}

// operatorStopped says whether the router saw the operator stop name
// (false when no router runs).
func (e *Entry) operatorStopped(name string) bool {
	e.routerMu.Lock()
	cur := e.routing
	e.routerMu.Unlock()
	return cur != nil && cur.r.OperatorStopped(name)
}

// routerStatus is the router's part of llamaboot status (nil: none runs).
func (e *Entry) routerStatus() any {
	e.routerMu.Lock()
	cur := e.routing
	e.routerMu.Unlock()
	if cur == nil {
		return nil
	}
	return router.Report{Listen: cur.srv.Addr(), Instances: cur.r.Status()}
}
