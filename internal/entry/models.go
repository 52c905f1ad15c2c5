package entry

import (
	"context"
	"sync"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/models"
	"github.com/llamaboot/llamaboot/internal/printer"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

// modelBoot fetches the models the boot's instances give by URL and hands
// each instance to the supervisor once its files are there, so its
// readiness timeout starts after the download. A model that cannot be
// fetched fails its instances only; the others start as usual.
type modelBoot struct {
	fetcher *models.Fetcher
	sup     *supervise.Supervisor
	p       *printer.Printer

	mu      sync.Mutex
	waiting []config.Instance // in config order
	failed  map[string]string
	cancel  context.CancelFunc
	done    chan struct{}
}

func newModelBoot(plan *config.Plan, sup *supervise.Supervisor, p *printer.Printer, o models.Options) *modelBoot {
	b := &modelBoot{fetcher: models.New(plan.Instances, o), sup: sup, p: p, failed: map[string]string{}}
	for _, in := range plan.Instances {
		if b.fetcher.Waiting(in.Name) {
			b.waiting = append(b.waiting, in)
		}
	}
	return b
}

// start downloads in the background, handing over instances as their
// files arrive.
func (b *modelBoot) start() {
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel, b.done = cancel, make(chan struct{})
	go func() {
		defer close(b.done)
		b.fetcher.Run(ctx, b.ready)
	}()
}

// runNow downloads every model before returning (STRICT: a failure is
// fatal at boot), stopping early when ctx is cancelled.
func (b *modelBoot) runNow(ctx context.Context) map[string]error {
	failed := b.fetcher.Run(ctx, nil)
	b.mu.Lock()
	defer b.mu.Unlock()
	for name, err := range failed {
		b.failed[name] = err.Error()
	}
	return failed
}

// handOver starts the instances whose downloads all succeeded.
func (b *modelBoot) handOver() {
	b.mu.Lock()
	var list []config.Instance
	for _, in := range b.waiting {
		if _, failed := b.failed[in.Name]; !failed {
			list = append(list, in)
		}
	}
	b.waiting = nil
	b.mu.Unlock()
	for _, in := range list {
		b.add(in)
	}
}

func (b *modelBoot) ready(name string, err error) {
	b.mu.Lock()
	var in config.Instance
	for i, w := range b.waiting {
		if w.Name == name {
			in = w
			b.waiting = append(b.waiting[:i:i], b.waiting[i+1:]...)
		}
	}
	if err != nil {
		b.failed[name] = err.Error()
		b.waiting = append(b.waiting, in) // still listed, as failed
	}
	b.mu.Unlock()
	if err != nil {
		b.p.Errorf("%s: not started: %v", name, err)
		return
	}
	b.add(in)
}

func (b *modelBoot) add(in config.Instance) {
	if _, err := b.sup.Upsert([]config.Instance{in}); err != nil {
		b.p.Errorf("%s: %v", in.Name, err)
	}
}

// stop cancels the downloads (their .part files stay for the next boot)
// and waits for them to end.
func (b *modelBoot) stop() {
	if b.cancel != nil {
		b.cancel()
		<-b.done
	}
}

// pending reports the instances still waiting for a download, or failed
// there, for status.
func (b *modelBoot) pending() []supervise.InstanceStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]supervise.InstanceStatus, 0, len(b.waiting))
	for _, in := range b.waiting {
		st := supervise.InstanceStatus{Name: in.Name, State: models.Downloading, Want: "up", Port: in.Port, URL: in.URL, LogFile: in.LogFile}
		if reason, ok := b.failed[in.Name]; ok {
			st.State, st.Error = "failed", reason
		}
		out = append(out, st)
	}
	return out
}

// pending is what status and health show of instances waiting for models.
func (e *Entry) pending() []supervise.InstanceStatus {
	if b := e.boot.Load(); b != nil {
		return b.pending()
	}
	return nil
}

func (b *modelBoot) downloads() any { return b.fetcher.Status() }

// isWaiting reports whether name still waits for its downloads (or failed
// there).
func (b *modelBoot) isWaiting(name string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, in := range b.waiting {
		if in.Name == name {
			return true
		}
	}
	return false
}

// withoutDownloads is the plan minus the instances whose model is given by
// URL: what must be runnable as it is.
func withoutDownloads(plan *config.Plan) *config.Plan {
	rest := *plan
	rest.Instances = nil
	for _, in := range plan.Instances {
		if in.ModelSource == nil {
			rest.Instances = append(rest.Instances, in)
		}
	}
	return &rest
}
