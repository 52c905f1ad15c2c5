package entry

import (
	"context"
	"fmt"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/models"
	"github.com/llamaboot/llamaboot/internal/watch"
)

// serving says whether entry serves a config, and so can reload it: only
// when asked to serve one on boot (a SIGHUP meant for the command must not
// start servers nobody asked for).
func (e *Entry) serving() bool { return e.o.ServeOnBoot && e.o.ConfigPath != "" }

// load reads and fully validates the config served, as at boot: syntax,
// keys, values, ports, server flags (strict mode), model files present
// (models given by URL excepted: they are downloaded).
// The plan comes back with its warnings even when a model is missing.
func (e *Entry) load() (*config.Plan, error) {
	plan, err := config.Load(e.o.ConfigPath, e.o.Config)
	if err != nil {
		return nil, err
	}
	return plan, withoutDownloads(plan).Runnable()
}

// loadDesired is load for the Reloader: the instances wanted running.
// Instances still waiting for their boot downloads are not started by a
// reload: they keep waiting (with the new spec, started once their files
// are there), or are dropped when the config no longer has them — unless
// their model changed to one already in place. A reload does not download:
// an instance it would start on a model whose marker does not vouch for the
// (new) URL and pin refuses the reload, with the key's line.
func (e *Entry) loadDesired() (string, []config.Instance, []string, error) {
	plan, err := e.load()
	var warnings []string
	if plan != nil {
		for _, w := range plan.Warnings {
			warnings = append(warnings, w.String())
		}
	}
	if err != nil {
		return e.o.ConfigPath, nil, warnings, err
	}
	if !plan.Enabled {
		e.setNoInstances(e.o.ConfigPath + ": master.enable = false: no server is started")
	} else {
		e.setNoInstances(e.o.ConfigPath + " has no enabled instance")
	}
	b := e.boot.Load()
	if b != nil {
		b.hand.Lock() // until afterReload: no download hands over an instance meanwhile
	}
	h := &heldReload{b: b}
	wanted := map[string]bool{}
	var desired []config.Instance
	if plan.Enabled { // master.enable = false: none
		for _, in := range plan.Instances {
			wanted[in.Name] = true
			old, failed, waiting := b.waitingSpec(in.Name)
			switch {
			case waiting && sameModel(old.ModelSource, in.ModelSource) && failed:
				h.failed = append(h.failed, in.Name)
			case waiting && sameModel(old.ModelSource, in.ModelSource):
				h.update = append(h.update, in)
			default:
				if waiting {
					h.start = append(h.start, in.Name)
				}
				desired = append(desired, in)
			}
		}
	}
	if b != nil {
		for _, name := range b.waitingNames() {
			if !wanted[name] {
				h.drop = append(h.drop, name)
			}
		}
	}
	started := *plan
	started.Instances = desired
	if problems := started.ModelProblems(notInPlace); len(problems) > 0 {
		if b != nil {
			b.hand.Unlock()
		}
		return e.o.ConfigPath, nil, warnings, &config.ValidationError{File: plan.File, Problems: problems}
	}
	e.held, e.next = h, plan
	return e.o.ConfigPath, desired, warnings, nil
}

// notInPlace says why an instance's model by URL cannot be started on as
// it is ("" when it can).
func notInPlace(in config.Instance) string {
	if in.ModelSource == nil {
		return ""
	}
	if msg := models.Check(in.ModelSource); msg != "" {
		return fmt.Sprintf("%s (instance %q): a reload does not download models; run llamaboot fetch-models, then reload again", msg, in.Name)
	}
	return ""
}

// afterReload settles what the reload that loadDesired loaded means for
// the instances waiting for downloads, and reports it.
func (e *Entry) afterReload(apply bool) []string {
	h, plan := e.held, e.next
	e.held, e.next = nil, nil
	if apply && plan != nil {
		_ = e.routeBy(plan) // a listener that cannot open is logged; the instances are served anyway
	}
	if h == nil || h.b == nil {
		return nil
	}
	defer h.b.hand.Unlock()
	return h.b.settle(h, apply)
}

// reloadInBackground reloads without holding up the signal loop; the
// Reloader logs what it did or why it refused.
func (e *Entry) reloadInBackground(why string) {
	if e.reloader == nil {
		return
	}
	go e.reloader.Run(false, why)
}

// configSum is the content hash of the config served, read before it is
// loaded: a change made after this is seen by the watch.
func (e *Entry) configSum() watch.Sum {
	if !e.o.Watch || !e.serving() {
		return watch.Sum{}
	}
	sum, _ := watch.Read(e.o.ConfigPath)
	return sum
}

// startWatch reloads whenever the config's content settles on something
// other than what was loaded. The content of what the path resolves to is
// polled, because inotify misses bind-mount updates and a Kubernetes
// ConfigMap changes by flipping a ..data link beside the file.
func (e *Entry) startWatch(loaded watch.Sum) {
	if !e.o.Watch {
		return
	}
	if !e.serving() {
		e.p.Warnf("--watch / AUTO_INFER_LLAMA_CPP_WATCH: no config is served (needs AUTO_INFER_LLAMA_CPP_ON_BOOT=1 and AUTO_INFER_LLAMA_CPP_CONFIG): nothing to watch")
		return
	}
	every := e.o.WatchEvery
	if every <= 0 {
		every = 2 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.unwatch = cancel
	e.p.Stepf("watching %s for changes (every %s)", e.o.ConfigPath, every)
	go watch.Poll(ctx, e.o.ConfigPath, every, loaded, func(watch.Sum) {
		e.reloader.Run(false, "the config changed")
	})
}
