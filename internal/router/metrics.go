package router

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/llamaboot/llamaboot/internal/promtext"
)

// Metrics are the router's series. A nil *Metrics counts nothing.
type Metrics struct {
	requests  *promtext.CounterVec
	duration  *promtext.HistogramVec
	ttfb      *promtext.HistogramVec
	inFlight  *promtext.GaugeVec
	queued    *promtext.GaugeVec
	starts    *promtext.CounterVec
	stops     *promtext.CounterVec
	collector []promtext.Collector

	byModel sync.Map // model label → *series
}

// series are one model's per-request series, found once: a request
// updates them without building label keys.
type series struct {
	ok       *promtext.Value64 // requests_total{code="200"}
	duration *promtext.Hist
	ttfb     *promtext.Hist
}

// of is model's series; nil when m is nil.
func (m *Metrics) of(model string) *series {
	if m == nil {
		return nil
	}
	if s, ok := m.byModel.Load(model); ok {
		return s.(*series)
	}
	s, _ := m.byModel.LoadOrStore(model, &series{ok: m.requests.With(model, "200"), duration: m.duration.With(model), ttfb: m.ttfb.With(model)})
	return s.(*series)
}

// NewMetrics makes the router's series; register Collectors.
func NewMetrics() *Metrics {
	buckets := []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}
	m := &Metrics{
		requests: promtext.NewCounterVec("llamaboot_router_requests_total",
			"Requests the router answered, by model (the name asked for, \"\" when none matched) and HTTP status (499: the client went away).",
			"model", "code"),
		duration: promtext.NewHistogramVec("llamaboot_router_request_duration_seconds",
			"From a request's arrival to the end of its answer (waiting for an on-demand start included), by model.",
			buckets, "model"),
		ttfb: promtext.NewHistogramVec("llamaboot_router_time_to_first_byte_seconds",
			"From a request's arrival to the first byte of its answer from the instance, by model.",
			buckets, "model"),
		inFlight: promtext.NewGaugeVec("llamaboot_router_in_flight",
			"Requests being served by the instance now.",
			"instance"),
		queued: promtext.NewGaugeVec("llamaboot_router_queued",
			"Requests waiting for the instance to start (or for room in its group).",
			"instance"),
		starts: promtext.NewCounterVec("llamaboot_router_starts_total",
			"Starts the router asked of the supervisor for a request.",
			"instance"),
		stops: promtext.NewCounterVec("llamaboot_router_stops_total",
			"Stops the router asked of the supervisor, by reason: idle (idle_timeout passed with no request) or evicted (made room in its group).",
			"instance", "reason"),
	}
	m.collector = []promtext.Collector{m.requests, m.duration, m.ttfb, m.inFlight, m.queued, m.starts, m.stops}
	return m
}

// Collectors are every series, to register.
func (m *Metrics) Collectors() []promtext.Collector { return m.collector }

func (m *Metrics) request(model string, code int) {
	if m != nil {
		m.requests.With(model, strconv.Itoa(code)).Inc()
	}
}

// done counts a request served (or tried) on an instance.
func (s *series) done(m *Metrics, model string, code int, d time.Duration) {
	if s == nil {
		return
	}
	if code == http.StatusOK {
		s.ok.Inc()
	} else {
		m.request(model, code)
	}
	s.duration.Observe(d.Seconds())
}

func (s *series) firstByte(d time.Duration) {
	if s != nil {
		s.ttfb.Observe(d.Seconds())
	}
}

func (m *Metrics) started(instance string) {
	if m != nil {
		m.starts.With(instance).Inc()
	}
}

func (m *Metrics) stopped(instance, reason string) {
	if m != nil {
		m.stops.With(instance, reason).Inc()
	}
}
