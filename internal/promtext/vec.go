package promtext

import (
	"math"
	"slices"
	"strings"
	"sync"
)

// vec is a family of one type whose series are made on first use, by
// label values.
type vec[T any] struct {
	name, help, typ string
	labels          []string
	make            func() *T

	mu     sync.Mutex
	series map[string]*T
	order  []string // keys, sorted at collection
	values map[string][]string
}

func newVec[T any](name, help, typ string, labels []string, mk func() *T) *vec[T] {
	return &vec[T]{name: name, help: help, typ: typ, labels: labels, make: mk, series: map[string]*T{}, values: map[string][]string{}}
}

// with returns the series of these label values, made on first use.
func (v *vec[T]) with(values ...string) *T {
	if len(values) != len(v.labels) {
		panic("promtext: " + v.name + ": wrong number of label values")
	}
	key := strings.Join(values, "\xff")
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.series[key]
	if s == nil {
		s = v.make()
		v.series[key] = s
		v.order = append(v.order, key)
		v.values[key] = slices.Clone(values)
	}
	return s
}

// each calls f for every series, sorted by label values.
func (v *vec[T]) each(f func(labels []Label, s *T)) {
	v.mu.Lock()
	keys := slices.Clone(v.order)
	v.mu.Unlock()
	slices.Sort(keys)
	for _, k := range keys {
		v.mu.Lock()
		s, vals := v.series[k], v.values[k]
		v.mu.Unlock()
		labels := make([]Label, len(vals))
		for i, val := range vals {
			labels[i] = Label{v.labels[i], val}
		}
		f(labels, s)
	}
}

// Value64 is a counter's or gauge's number, safe for concurrent use.
type Value64 struct {
	mu sync.Mutex
	v  float64
}

func (x *Value64) Add(d float64) { x.mu.Lock(); x.v += d; x.mu.Unlock() }
func (x *Value64) Inc()          { x.Add(1) }
func (x *Value64) Set(v float64) { x.mu.Lock(); x.v = v; x.mu.Unlock() }
func (x *Value64) Get() float64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.v
}

// CounterVec and GaugeVec are counters and gauges by label values.
type (
	CounterVec struct{ v *vec[Value64] }
	GaugeVec   struct{ v *vec[Value64] }
)

func NewCounterVec(name, help string, labels ...string) *CounterVec {
	return &CounterVec{newVec(name, help, Counter, labels, func() *Value64 { return &Value64{} })}
}

func NewGaugeVec(name, help string, labels ...string) *GaugeVec {
	return &GaugeVec{newVec(name, help, Gauge, labels, func() *Value64 { return &Value64{} })}
}

// With returns the series of these label values.
func (c *CounterVec) With(values ...string) *Value64 { return c.v.with(values...) }
func (g *GaugeVec) With(values ...string) *Value64   { return g.v.with(values...) }

func (c *CounterVec) Collect() []Family { return collectValues(c.v) }
func (g *GaugeVec) Collect() []Family   { return collectValues(g.v) }

func collectValues(v *vec[Value64]) []Family {
	f := Family{Name: v.name, Help: v.help, Type: v.typ}
	v.each(func(labels []Label, s *Value64) {
		f.Samples = append(f.Samples, Sample{Labels: labels, Value: s.Get()})
	})
	return []Family{f}
}

// HistogramVec is histograms by label values, with fixed upper bounds.
type HistogramVec struct {
	v       *vec[Hist]
	buckets []float64
}

// Hist is one histogram: counts per upper bound, sum and count.
type Hist struct {
	mu      sync.Mutex
	buckets []float64
	counts  []uint64 // per bucket, not cumulative
	sum     float64
	count   uint64
}

func NewHistogramVec(name, help string, buckets []float64, labels ...string) *HistogramVec {
	b := slices.Clone(buckets)
	slices.Sort(b)
	return &HistogramVec{v: newVec(name, help, Histogram, labels, func() *Hist { return &Hist{buckets: b, counts: make([]uint64, len(b))} }), buckets: b}
}

func (h *HistogramVec) With(values ...string) *Hist { return h.v.with(values...) }

// Observe counts one value.
func (h *Hist) Observe(x float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if i, _ := slices.BinarySearch(h.buckets, x); i < len(h.buckets) {
		h.counts[i]++
	}
	h.sum += x
	h.count++
}

func (h *HistogramVec) Collect() []Family {
	f := Family{Name: h.v.name, Help: h.v.help, Type: Histogram}
	h.v.each(func(labels []Label, s *Hist) {
		s.mu.Lock()
		counts, sum, count := slices.Clone(s.counts), s.sum, s.count
		s.mu.Unlock()
		var cum uint64
		for i, le := range h.buckets {
			cum += counts[i]
			f.Samples = append(f.Samples, Sample{Name: h.v.name + "_bucket", Labels: append(slices.Clone(labels), Label{"le", FormatFloat(le)}), Value: float64(cum)})
		}
		f.Samples = append(f.Samples,
			Sample{Name: h.v.name + "_bucket", Labels: append(slices.Clone(labels), Label{"le", FormatFloat(math.Inf(1))}), Value: float64(count)},
			Sample{Name: h.v.name + "_sum", Labels: labels, Value: sum},
			Sample{Name: h.v.name + "_count", Labels: labels, Value: float64(count)})
	})
	return []Family{f}
}
