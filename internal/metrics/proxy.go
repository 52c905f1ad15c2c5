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

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/launch"
	"github.com/llamaboot/llamaboot/internal/promtext"
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
	fams map[string]*promtext.Family
	err  error
}

// Collect scrapes, then merges the families of every instance, each
// sample with its instance label, and llamaboot_metrics_proxy_up.
func (p *proxy) Collect() []promtext.Family {
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
			r.fams, r.err = p.scrape(s.Spec)
			if r.err != nil {
				r.err = fmt.Errorf("instance %s: %w", r.name, r.err)
			}
		}()
	}
	wg.Wait()
	if len(results) == 0 {
		return nil
	}
	up := &promtext.Family{Name: upName, Type: promtext.Gauge,
		Help: "1 when the instance's own /metrics (metrics_proxy = true) was scraped for this scrape, else 0."}
	merged := map[string]*promtext.Family{upName: up}
	for _, r := range results {
		v := 1.0
		if r.err != nil {
			v = 0
		}
		up.Samples = append(up.Samples, promtext.Sample{Labels: []promtext.Label{{Name: "instance", Value: r.name}}, Value: v})
		for _, name := range slices.Sorted(maps.Keys(r.fams)) {
			f := r.fams[name]
			into := merged[name]
			if into == nil {
				into = &promtext.Family{Name: f.Name, Help: f.Help, Type: f.Type}
				merged[name] = into
			} else if into.Type != f.Type {
				continue // a family of another type from another instance: left out
			}
			for _, s := range f.Samples {
				s.Labels = withInstance(s.Labels, r.name)
				into.Samples = append(into.Samples, s)
			}
		}
	}
	out := make([]promtext.Family, 0, len(merged))
	for _, name := range slices.Sorted(maps.Keys(merged)) {
		out = append(out, *merged[name])
	}
	return out
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

// scrape reads an instance's /metrics, with its API key if it has one.
func (p *proxy) scrape(spec config.Instance) (map[string]*promtext.Family, error) {
	url := spec.ProbeURL() + "/metrics"
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/plain")
	key, keyErr := spec.APIKey()
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := scrapeClient.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("GET %s: no answer within %s", url, p.timeout)
		}
		return nil, err
	}
	defer resp.Body.Close()
	switch {
	case (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) && key == "":
		if keyErr != nil && !errors.Is(keyErr, config.ErrNoAPIKey) {
			return nil, fmt.Errorf("GET %s: %s; llamaboot could not read its key: %v", url, resp.Status, keyErr)
		}
		return nil, fmt.Errorf("GET %s: %s: it wants an API key that llamaboot does not hold (give it with api_key_file or api_key in its config)", url, resp.Status)
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return nil, fmt.Errorf("GET %s: %s to the key of its api_key/api_key_file", url, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("GET %s: %s (does its server table have metrics = true?)", url, resp.Status)
	}
	fams, err := promtext.Parse(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return fams, nil
}

// withInstance adds instance=name to labels, kept sorted by name; a label
// of that name already there is kept as exported_instance, as Prometheus
// itself does.
func withInstance(labels []promtext.Label, name string) []promtext.Label {
	out := make([]promtext.Label, 0, len(labels)+1)
	for _, l := range labels {
		if l.Name == "instance" {
			l.Name = "exported_instance"
		}
		out = append(out, l)
	}
	out = append(out, promtext.Label{Name: "instance", Value: name})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
