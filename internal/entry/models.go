package entry

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/control"
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

	// hand is held while an instance is handed to the supervisor, and by a
	// reload from its Load to its After, so that a download ending
	// meanwhile starts the instance with the spec the reload settles on.
	hand sync.Mutex

	mu      sync.Mutex
	waiting []config.Instance // in config order
	failed  map[string]string
	cancel  context.CancelCauseFunc
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
	ctx, cancel := context.WithCancelCause(context.Background())
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
	b.hand.Lock()
	defer b.hand.Unlock()
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
	b.hand.Lock()
	defer b.hand.Unlock()
	b.mu.Lock()
	var in config.Instance
	found := false
	for i, w := range b.waiting {
		if w.Name == name {
			in, found = w, true
			b.waiting = append(b.waiting[:i:i], b.waiting[i+1:]...)
			break
		}
	}
	if !found {
		b.mu.Unlock()
		return // a reload removed it, or started it on a file already there
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
	if _, err := b.sup.AddConfigured([]config.Instance{in}); err != nil {
		b.p.Errorf("%s: %v", in.Name, err)
	}
}

// errSupervisorStopping is why downloads end when entry stops (said
// instead of "context canceled", which it still matches).
var errSupervisorStopping error = stoppingError{}

type stoppingError struct{}

func (stoppingError) Error() string        { return "the supervisor is stopping" }
func (stoppingError) Is(target error) bool { return target == context.Canceled }

// stop cancels the downloads (their .part files stay for the next boot)
// and waits for them to end.
func (b *modelBoot) stop() {
	if b.cancel != nil {
		b.cancel(errSupervisorStopping)
		<-b.done
	}
}

// pending reports the instances still waiting for a download, or failed
// there, for status.
func (b *modelBoot) pending() []control.InstanceStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]control.InstanceStatus, 0, len(b.waiting))
	for _, in := range b.waiting {
		st := control.InstanceStatus{Name: in.Name, State: models.Downloading, Want: "up", Port: in.Port, URL: in.URL, LogFile: in.LogFile}
		if reason, ok := b.failed[in.Name]; ok {
			st.State, st.Error = "failed", reason
		}
		out = append(out, st)
	}
	return out
}

// pending is what status and health show of instances waiting for models.
func (e *Entry) pending() []control.InstanceStatus {
	if b := e.boot.Load(); b != nil {
		return b.pending()
	}
	return nil
}

func (b *modelBoot) downloads() any { return b.fetcher.Status() }

// waitingSpec returns the spec name waits with for its downloads, and
// whether they failed; ok is false when name waits for nothing.
func (b *modelBoot) waitingSpec(name string) (in config.Instance, failed, ok bool) {
	if b == nil {
		return in, false, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, w := range b.waiting {
		if w.Name == name {
			_, failed = b.failed[name]
			return w, failed, true
		}
	}
	return in, false, false
}

// heldReload is what a reload means for instances waiting for their
// model downloads, decided by its Load and settled by its After (b.hand
// held in between).
type heldReload struct {
	b      *modelBoot        // whose hand the reload holds; nil: no downloads
	update []config.Instance // same model: start with this spec once it is there
	failed []string          // same model, whose download failed: left as they are
	start  []string          // started by the reload on a file already in place
	drop   []string          // no longer in the config
}

// settle applies h (unless !apply: a dry run or a refused reload) and
// reports it, one line per instance; b.hand is held.
func (b *modelBoot) settle(h *heldReload, apply bool) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	verb := func(did, would string) string {
		if apply {
			return did
		}
		return would
	}
	var lines []string
	for _, in := range h.update {
		for i, old := range b.waiting {
			if old.Name != in.Name {
				continue
			}
			if sameSpec(old, in) {
				lines = append(lines, fmt.Sprintf("= %s: unchanged (downloading its model)", in.Name))
				break
			}
			lines = append(lines, fmt.Sprintf("~ %s: still downloading its model: %s with the new settings once it is there: %s",
				in.Name, verb("starts", "would start"), strings.Join(supervise.SpecChanges(old, in), "; ")))
			if apply {
				b.waiting[i] = in
			}
		}
	}
	for _, name := range h.failed {
		lines = append(lines, fmt.Sprintf("= %s: unchanged (failed: %s)", name, b.failed[name]))
	}
	for _, name := range h.drop {
		lines = append(lines, fmt.Sprintf("- %s: was waiting for its model: %s (its download ends unless another instance needs the file)", name, verb("removed, never started", "would be removed, never started")))
	}
	if apply {
		for _, name := range append(slices.Clone(h.drop), h.start...) {
			b.waiting = slices.DeleteFunc(b.waiting, func(in config.Instance) bool { return in.Name == name })
			delete(b.failed, name)
			b.fetcher.Drop(name)
		}
	}
	return lines
}

// waitingNames lists the instances waiting for downloads, failed or not.
func (b *modelBoot) waitingNames() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, in := range b.waiting {
		out = append(out, in.Name)
	}
	return out
}

// sameSpec compares what two specs run, ignoring positions in the file
// (as the supervisor compares them).
func sameSpec(a, b config.Instance) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// sameModel says whether two specs wait for the same download.
func sameModel(a, b *config.ModelSource) bool {
	return a != nil && b != nil && a.URL == b.URL && a.Path == b.Path && a.Parts == b.Parts && slices.Equal(a.SHA256, b.SHA256)
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
