package router

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the router's series. A nil *Metrics counts nothing.
type Metrics struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	ttfb      *prometheus.HistogramVec
	inFlight  *prometheus.GaugeVec
	queued    *prometheus.GaugeVec
	starts    *prometheus.CounterVec
	stops     *prometheus.CounterVec
	collector []prometheus.Collector
}

// NewMetrics makes the router's series; register Collectors.
func NewMetrics() *Metrics {
	buckets := []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llamaboot_router_requests_total",
			Help: "Requests the router answered, by model (the name asked for, \"\" when none matched) and HTTP status (499: the client went away)."},
			[]string{"model", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "llamaboot_router_request_duration_seconds",
			Help: "From a request's arrival to the end of its answer (waiting for an on-demand start included), by model.", Buckets: buckets},
			[]string{"model"}),
		ttfb: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "llamaboot_router_time_to_first_byte_seconds",
			Help: "From a request's arrival to the first byte of its answer from the instance, by model.", Buckets: buckets},
			[]string{"model"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "llamaboot_router_in_flight",
			Help: "Requests being served by the instance now."}, []string{"instance"}),
		queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "llamaboot_router_queued",
			Help: "Requests waiting for the instance to start (or for room in its group)."}, []string{"instance"}),
		starts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llamaboot_router_starts_total",
			Help: "Starts the router asked of the supervisor for a request."}, []string{"instance"}),
		stops: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llamaboot_router_stops_total",
			Help: "Stops the router asked of the supervisor, by reason: idle (idle_timeout passed with no request) or evicted (made room in its group)."},
			[]string{"instance", "reason"}),
	}
	m.collector = []prometheus.Collector{m.requests, m.duration, m.ttfb, m.inFlight, m.queued, m.starts, m.stops}
	return m
}

// Collectors are every series, to register.
func (m *Metrics) Collectors() []prometheus.Collector { return m.collector }

func (m *Metrics) request(model string, code int) {
	if m != nil {
		m.requests.WithLabelValues(model, strconv.Itoa(code)).Inc()
	}
}

func (m *Metrics) done(model string, code int, d time.Duration) {
	if m != nil {
		m.request(model, code)
		m.duration.WithLabelValues(model).Observe(d.Seconds())
	}
}

func (m *Metrics) firstByte(model string, d time.Duration) {
	if m != nil {
		m.ttfb.WithLabelValues(model).Observe(d.Seconds())
	}
}

func (m *Metrics) started(instance string) {
	if m != nil {
		m.starts.WithLabelValues(instance).Inc()
	}
}

func (m *Metrics) stopped(instance, reason string) {
	if m != nil {
		m.stops.WithLabelValues(instance, reason).Inc()
	}
}
