package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"

	"github.com/llamaboot/llamaboot/internal/launch"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

// proxy gathers, at each scrape, the /metrics of every ready instance
// with metrics_proxy = true, adds an instance label to each series and
// merges them, so one scrape target covers every server in the container.
type proxy struct {
	sup     *supervise.Supervisor
	timeout time.Duration
}

const upName = "llamaboot_metrics_proxy_up"

// scraped is one instance's /metrics, parsed.
type scraped struct {
	name string
	fams map[string]*dto.MetricFamily
	err  error
}

func (p *proxy) Gather() ([]*dto.MetricFamily, error) {
	var wg sync.WaitGroup
	var results []*scraped
	for _, s := range p.sup.Snapshots() {
		if !s.Spec.MetricsProxy {
			continue
		}
		r := &scraped{name: s.Spec.Name}
		results = append(results, r)
		// Only a ready instance whose own process holds the port is
		// scraped: whatever else answers there is not its metrics.
		if s.State != supervise.Ready {
			r.err = fmt.Errorf("instance %s: not ready (%s)", r.name, s.State)
			continue
		}
		if !listensOn(s.PID, s.Spec.Port) {
			r.err = fmt.Errorf("instance %s: port %d is not held by its process (pid %d)", r.name, s.Spec.Port, s.PID)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.fams, r.err = p.scrape(s.Spec.ProbeURL() + "/metrics")
			if r.err != nil {
				r.err = fmt.Errorf("instance %s: %w", r.name, r.err)
			}
		}()
	}
	wg.Wait()
	if len(results) == 0 {
		return nil, nil
	}
	up := &dto.MetricFamily{Name: proto.String(upName), Type: dto.MetricType_GAUGE.Enum(),
		Help: proto.String("1 when the instance's own /metrics (metrics_proxy = true) was scraped for this scrape, else 0.")}
	merged := map[string]*dto.MetricFamily{upName: up}
	var errs prometheus.MultiError
	for _, r := range results {
		v := 1.0
		if r.err != nil {
			v = 0
			errs.Append(r.err)
		}
		up.Metric = append(up.Metric, &dto.Metric{Label: []*dto.LabelPair{label("instance", r.name)}, Gauge: &dto.Gauge{Value: proto.Float64(v)}})
		for _, name := range slices.Sorted(maps.Keys(r.fams)) {
			f := r.fams[name]
			into := merged[name]
			if into == nil {
				into = &dto.MetricFamily{Name: f.Name, Help: f.Help, Type: f.Type, Unit: f.Unit}
				merged[name] = into
			} else if into.GetType() != f.GetType() {
				errs.Append(fmt.Errorf("instance %s: %s is a %s here but a %s from another instance; left out", r.name, name, f.GetType(), into.GetType()))
				continue
			}
			for _, m := range f.Metric {
				m.Label = withInstance(m.Label, r.name)
				into.Metric = append(into.Metric, m)
			}
		}
	}
	out := make([]*dto.MetricFamily, 0, len(merged))
	for _, name := range slices.Sorted(maps.Keys(merged)) {
		out = append(out, merged[name])
	}
	return out, errs.MaybeUnwrap()
}

// scrapeClient talks to the instance itself: no proxy from the
// environment, no redirect followed elsewhere.
var scrapeClient = &http.Client{
	Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// listensOn is launch.ListensOn; a variable so tests on fake processes can
// stand in for /proc.
var listensOn = launch.ListensOn

func (p *proxy) scrape(url string) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/plain")
	resp, err := scrapeClient.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("GET %s: no answer within %s", url, p.timeout)
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s (does its server table have metrics = true?)", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return fams, nil
}

// withInstance adds instance=name to labels, kept sorted by name; a label
// of that name already there is kept as exported_instance, as Prometheus
// itself does.
func withInstance(labels []*dto.LabelPair, name string) []*dto.LabelPair {
	out := make([]*dto.LabelPair, 0, len(labels)+1)
	for _, l := range labels {
		if l.GetName() == "instance" {
			l = label("exported_instance", l.GetValue())
		}
		out = append(out, l)
	}
	out = append(out, label("instance", name))
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

func label(name, value string) *dto.LabelPair {
	return &dto.LabelPair{Name: proto.String(name), Value: proto.String(value)}
}
