package entry

import (
	"github.com/llamaboot/llamaboot/internal/config"
)

// serving says whether entry serves a config, and so can reload it: only
// when asked to serve one on boot (a SIGHUP meant for the command must not
// start servers nobody asked for).
func (e *Entry) serving() bool { return e.o.ServeOnBoot && e.o.ConfigPath != "" }

// load reads and fully validates the config served, as at boot: syntax,
// keys, values, ports, server flags (strict mode), model files present.
// The plan comes back with its warnings even when a model is missing.
func (e *Entry) load() (*config.Plan, error) {
	plan, err := config.Load(e.o.ConfigPath, e.o.Config)
	if err != nil {
		return nil, err
	}
	return plan, plan.Runnable()
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
	return e.o.ConfigPath, plan.Instances, warnings, nil
}

// reloadInBackground reloads without holding up the signal loop; the
// Reloader logs what it did or why it refused.
func (e *Entry) reloadInBackground(why string) {
	if e.reloader == nil {
		return
	}
	go e.reloader.Run(false, why)
}
