package entry

import (
	"time"

	"github.com/llamaboot/llamaboot/internal/install"
	"github.com/llamaboot/llamaboot/internal/metrics"
)

// serveMetrics starts the opt-in HTTP endpoint (/livez, /readyz, /metrics)
// when Options.Listen asks for it. A failure to bind is said loudly and,
// under STRICT, ends the boot: probes and scrapes would find nothing.
func (e *Entry) serveMetrics(bundleDir string) error {
	if e.o.Listen == "" {
		return nil
	}
	m, err := metrics.Listen(e.o.Listen, metrics.Options{
		Sup:     e.sup,
		Started: e.began,
		Bundle: func() (metrics.Bundle, bool) {
			mk, err := install.ReadMarker(bundleDir)
			return metrics.Bundle{BuildTag: mk.BuildTag, SHA256: mk.SHA256, Archive: mk.ArchiveName}, err == nil
		},
		InstallTook:     func() (time.Duration, bool) { return e.installTook, e.installTook > 0 },
		Pending:         e.pending,
		Collectors:      e.routerMetrics.Collectors(),
		NotReady:        e.notReady,
		OperatorStopped: e.operatorStopped,
	})
	if err != nil {
		e.p.Errorf("%v", err)
		return err
	}
	e.metrics = m
	e.p.Stepf("serving /livez, /readyz and /metrics on http://%s", m.Addr())
	return nil
}
