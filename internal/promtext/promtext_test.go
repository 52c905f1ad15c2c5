package promtext

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// What Write produces, Prometheus' own parser reads back to the same
// values; what Parse reads of llama-server's answer is what it says.
func TestWriteReadsBackWithPrometheusParser(t *testing.T) {
	c := NewCounterVec("x_requests_total", "Requests.\nTwo lines, a \\ too.", "model", "code")
	c.With(`we"ird\name`, "200").Add(3)
	c.With("a", "499").Inc()
	g := NewGaugeVec("x_in_flight", "In flight.", "instance")
	g.With("b").Set(-2.5)
	h := NewHistogramVec("x_seconds", "Durations.", []float64{0.1, 1, 10}, "model")
	for _, v := range []float64{0.05, 0.1, 0.5, 5, 50} {
		h.With("m").Observe(v)
	}
	var fams []Family
	for _, col := range []Collector{c, g, h} {
		fams = append(fams, col.Collect()...)
	}
	fams = append(fams, Family{Name: "x_inf", Type: Gauge, Samples: []Sample{{Value: math.Inf(1)}}})
	var buf bytes.Buffer
	if err := Write(&buf, Sorted(fams)); err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	got, err := parser.TextToMetricFamilies(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	req := got["x_requests_total"]
	if req.GetHelp() != "Requests.\nTwo lines, a \\ too." || len(req.Metric) != 2 {
		t.Fatalf("%v", req)
	}
	for _, m := range req.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["model"] == `we"ird\name` && m.Counter.GetValue() != 3 || labels["model"] == "a" && m.Counter.GetValue() != 1 {
			t.Errorf("counter %v = %v", labels, m.Counter.GetValue())
		}
	}
	if v := got["x_in_flight"].Metric[0].Gauge.GetValue(); v != -2.5 {
		t.Errorf("gauge %v", v)
	}
	hm := got["x_seconds"].Metric[0].Histogram
	want := []uint64{2, 3, 4, 5} // le 0.1 (0.1 included), 1, 10, +Inf
	for i, b := range hm.Bucket {
		if b.GetCumulativeCount() != want[i] {
			t.Errorf("bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want[i])
		}
	}
	if hm.GetSampleCount() != 5 || hm.GetSampleSum() != 55.65 {
		t.Errorf("count %d sum %v", hm.GetSampleCount(), hm.GetSampleSum())
	}
	if !math.IsInf(got["x_inf"].Metric[0].Gauge.GetValue(), 1) {
		t.Error("+Inf lost")
	}

	// And promtext reads its own output as Prometheus does.
	back, err := Parse(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if f := back["x_seconds"]; f.Type != Histogram || len(f.Samples) != 6 || f.Samples[5].Name != "x_seconds_count" || f.Samples[5].Value != 5 {
		t.Errorf("histogram read back: %+v", f)
	}
	if f := back["x_requests_total"]; f.Help != req.GetHelp() || f.Samples[1].Label("model") != `we"ird\name` {
		t.Errorf("counter read back: %+v", f)
	}
}

func TestParseLlamaServerMetrics(t *testing.T) {
	text := `# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 1234
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
untyped_thing{a="1"} 7 1700000000000
`
	fams, err := Parse(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{"llamacpp:prompt_tokens_total": 1234, "llamacpp:requests_processing": 2, "untyped_thing": 7} {
		if v, ok := Value(fams, name); !ok || v != want {
			t.Errorf("%s = %v %v, want %v", name, v, ok, want)
		}
	}
	for _, bad := range []string{"x{a=1} 2\n", "x{a=\"1} 2\n", "x notanumber\n", "# TYPE x flavour\n"} {
		if _, err := Parse(strings.NewReader(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
