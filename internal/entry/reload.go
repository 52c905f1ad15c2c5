package entry

import (
	"context"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
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
		return e.o.ConfigPath, nil, warnings, nil // master.enable = false: none
	}
	// Instances still waiting for their boot downloads are not started by
	// a reload: they start when their files are there.
	var desired []config.Instance
	for _, in := range plan.Instances {
		if b := e.boot.Load(); b == nil || !b.isWaiting(in.Name) {
			desired = append(desired, in)
		}
	}
	// A model by URL that a reload brings in is not fetched by it: refuse
	// the reload (with the key's line) rather than start a server without
	// its model.
	started := *plan
	started.Instances = desired
	if err := started.Runnable(); err != nil {
		return e.o.ConfigPath, nil, warnings, err
	}
	return e.o.ConfigPath, desired, warnings, nil
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
