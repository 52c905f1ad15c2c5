// Package metrics is llamaboot's opt-in HTTP endpoint (entry --listen,
// AUTO_INFER_LLAMA_CPP_METRICS_ADDR): /livez and /readyz judge the
// supervised instances by the rules of `llamaboot healthcheck`, and
// /metrics serves, in the Prometheus text format, the supervisor's own
// metrics (per instance state, readiness, restarts by reason, uptime, time
// to ready, last exit code; the boot install; the bundle; the supervisor)
// and, for instances with metrics_proxy, each llama-server's own /metrics
// with an instance label. Nothing listens unless asked.
package metrics

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/llamaboot/llamaboot/internal/buildinfo"
	"github.com/llamaboot/llamaboot/internal/connlimit"
	"github.com/llamaboot/llamaboot/internal/control"
	"github.com/llamaboot/llamaboot/internal/health"
	"github.com/llamaboot/llamaboot/internal/promtext"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

// Bundle is the installed llama.cpp bundle, as its marker records it.
type Bundle struct {
	BuildTag, SHA256, Archive string
}

// Options are what the endpoint reports on.
type Options struct {
	Sup     *supervise.Supervisor
	Started time.Time // when the supervisor started
	// Bundle reads the installed bundle (false: none installed).
	Bundle func() (Bundle, bool)
	// InstallTook is how long the boot install took (false: none ran).
	InstallTook func() (time.Duration, bool)
	// Pending reports instances not handed to the supervisor yet (waiting
	// for their model downloads); /readyz counts them as not ready.
	Pending func() []control.InstanceStatus
	// OperatorStopped, when set, says whether the operator stopped an
	// on-demand instance (the router knows): /readyz judges it not ready.
	OperatorStopped func(name string) bool
	// Collectors are more series to serve (the router's).
	Collectors []promtext.Collector
	// NotReady says why the supervisor itself is not ready, if so (see
	// health.Health.Gated).
	NotReady func(instances int) string
	// ProxyTimeout bounds each scrape of a llama-server's /metrics
	// (default 5s): a wedged server must not wedge the scrape.
	ProxyTimeout time.Duration
	// Limits bound the connections clients hold (default DefaultLimits);
	// IdleTimeout closes a kept-alive connection left idle (default 60s).
	Limits      connlimit.Limits
	IdleTimeout time.Duration
}

// DefaultLimits bound the endpoint's connections: a probe or a scraper
// needs a few; thousands of idle ones from one client once exhausted PID
// 1's descriptors, so the control socket died and a crashed instance could
// not be restarted.
var DefaultLimits = connlimit.Limits{Max: 64, PerPeer: 16, Headroom: 128}

// Server is the endpoint, listening.
type Server struct {
	srv    *http.Server
	ln     net.Listener
	cancel func()
}

// Listen serves the endpoint on addr (such as ":9100") until Close.
func Listen(addr string, o Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s for /livez, /readyz and /metrics: %w", addr, err)
	}
	if o.Limits == (connlimit.Limits{}) {
		o.Limits = DefaultLimits
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 60 * time.Second
	}
	if o.ProxyTimeout == 0 {
		o.ProxyTimeout = 5 * time.Second
	}
	h, cancel := Handler(o)
	ln = connlimit.New(ln, o.Limits, connlimit.IPPeer)
	// Every phase is timed: a client trickling its request, never reading
	// the answer or idling between requests gives its connection up.
	s := &Server{ln: ln, cancel: cancel, srv: &http.Server{Handler: h,
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 2*o.ProxyTimeout + 20*time.Second, IdleTimeout: o.IdleTimeout,
		MaxHeaderBytes: 16 << 10}}
	go s.srv.Serve(ln)
	return s, nil
}

// Addr is where it listens.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops serving.
func (s *Server) Close() {
	_ = s.srv.Close()
	s.cancel()
}

// Handler serves /livez, /readyz and /metrics; call stop when done with it
// (it follows the supervisor's events).
func Handler(o Options) (h http.Handler, stop func()) {
	if o.ProxyTimeout == 0 {
		o.ProxyTimeout = 5 * time.Second
	}
	c := newCollector(o)
	p := &proxy{sup: o.Sup, timeout: o.ProxyTimeout}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		fams := c.Collect()
		fams = append(fams, processFamilies()...)
		fams = append(fams,
			promtext.Family{Name: "llamaboot_supervisor_uptime_seconds", Help: "Seconds since the supervisor (llamaboot entry) started.", Type: promtext.Gauge,
				Samples: []promtext.Sample{{Value: time.Since(o.Started).Seconds()}}},
			promtext.Family{Name: "llamaboot_build_info", Help: "llamaboot's version and commit (always 1).", Type: promtext.Gauge,
				Samples: []promtext.Sample{{Labels: []promtext.Label{{Name: "commit", Value: buildinfo.Commit()}, {Name: "version", Value: buildinfo.Version}}, Value: 1}}})
		for _, more := range o.Collectors {
			fams = append(fams, more.Collect()...)
		}
		// A llama-server that cannot be scraped is reported (its
		// llamaboot_metrics_proxy_up is 0), not a reason to fail the scrape.
		fams = append(fams, p.Collect()...)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_ = promtext.Write(w, promtext.Sorted(fams))
	})
	judge := func(live bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var pending []health.InstanceHealth
			if o.Pending != nil {
				pending = control.PendingHealth(o.Pending())
			}
			only := r.URL.Query().Get("instance")
			h, err := health.JudgeWith(health.OperatorStopped(o.Sup.Snapshots(), o.OperatorStopped), pending, time.Now(), live, only)
			h = h.Gated(o.NotReady, only)
			code := http.StatusOK
			switch {
			case errors.Is(err, supervise.ErrUnknownInstance):
				code = http.StatusNotFound
				h.OK, h.Summary = false, err.Error()
			case !h.OK:
				code = http.StatusServiceUnavailable
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(h)
		}
	}
	mux.Handle("GET /livez", judge(true))
	mux.Handle("GET /readyz", judge(false))
	return mux, c.stop
}
