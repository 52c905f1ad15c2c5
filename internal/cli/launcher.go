package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/control"
	"github.com/llamaboot/llamaboot/internal/launch"
	"github.com/llamaboot/llamaboot/internal/printer"
	"github.com/llamaboot/llamaboot/internal/serverflags"
)

const launchPrefix = "[llamaboot]"

// loadPlan reads the config named by flag or $AUTO_INFER_LLAMA_CPP_CONFIG.
// An empty path means there is nothing to load.
// Server keys are checked against the resolved llama-server's flags
// (unknown ones are errors under AUTO_INFER_LLAMA_CPP_STRICT).
func loadPlan(p *printer.Printer, flagPath, appFlag string, env Env) (*config.Plan, string, error) {
	path := flagPath
	if path == "" {
		path = env("AUTO_INFER_LLAMA_CPP_CONFIG")
	}
	if path == "" {
		return nil, "", nil
	}
	plan, err := config.Load(path, configOptions(appDir(appFlag, env), env))
	return plan, path, err
}

// configOptions is how every command (and entry) loads a config.
func configOptions(app string, env Env) config.Options {
	return config.Options{
		AppDir:      app,
		ModelsDir:   env("AUTO_INFER_MODELS_DIR"),
		Overrides:   env("AUTO_INFER_LLAMA_CPP_OVERRIDES"),
		RouterKeys:  env("AUTO_INFER_LLAMA_CPP_ROUTER_KEYS"),
		ServerFlags: serverflags.ForAppDir(app, os.Environ()),
	}
}

// requirePlan is loadPlan for commands that need a config: a missing one
// or a load error is reported and returned as the exit status.
func requirePlan(p *printer.Printer, flagPath, appFlag string, env Env) (*config.Plan, string, error) {
	plan, path, err := loadPlan(p, flagPath, appFlag, env)
	if err != nil {
		return nil, "", reportConfigError(p, err)
	}
	if plan == nil {
		p.Errorf("no config: pass --config FILE or set AUTO_INFER_LLAMA_CPP_CONFIG")
		return nil, "", exitError(ExitBadInput)
	}
	return plan, path, nil
}

// reportConfigError prints a load error, one problem per line.
func reportConfigError(p *printer.Printer, err error) error {
	var se *config.SyntaxError
	if errors.As(err, &se) && se.Context != "" {
		p.Errorf("%v\n%s", err, se.Context)
	} else {
		p.Errorf("%v", err)
	}
	return exitError(exitStatus(err))
}

func newPlanCmd(env Env) *cobra.Command {
	var cfg, app string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "plan [--config F] [--json]",
		Short: "Validate the instance file and print each instance's command line; starts nothing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p := printer.New(cmd.OutOrStdout(), cmd.ErrOrStderr(), launchPrefix, false)
			plan, path, err := requirePlan(p, cfg, app, env)
			if err != nil {
				return err
			}
			// Plans are often made where the models are not: only warn.
			for _, w := range append(plan.Warnings, plan.MissingModels(nil)...) {
				p.Warnf("%s", w)
			}
			preflightWarnings(p, plan)
			if asJSON {
				out := []config.Instance{}
				for _, in := range plan.Instances {
					out = append(out, in.Redacted()) // keys never printed
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "    ")
				return enc.Encode(out)
			}
			printPlan(cmd.OutOrStdout(), path, plan)
			return nil
		},
	}
	cmd.Flags().StringVar(&cfg, "config", "", "instance file (env AUTO_INFER_LLAMA_CPP_CONFIG)")
	cmd.Flags().StringVar(&app, "app-dir", "", "app dir where the installed bundle is looked for (env AUTO_INFER_APP_DIR)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array, one object per enabled instance")
	return cmd
}

func printPlan(w io.Writer, path string, plan *config.Plan) {
	if !plan.Enabled {
		fmt.Fprintf(w, "%s: master.enable = false: nothing would be launched\n", path)
		return
	}
	onDemand := 0
	for _, in := range plan.Instances {
		if in.Routing.OnDemand {
			onDemand++
		}
	}
	if onDemand > 0 {
		// The router starts those at their first request, not the boot.
		fmt.Fprintf(w, "%s: %d instance(s): %d to launch at boot, %d on demand (started at their first request)", path, len(plan.Instances), len(plan.Instances)-onDemand, onDemand)
	} else {
		fmt.Fprintf(w, "%s: %d instance(s) to launch", path, len(plan.Instances))
	}
	if len(plan.Disabled) > 0 {
		fmt.Fprintf(w, " (disabled: %s)", strings.Join(plan.Disabled, ", "))
	}
	fmt.Fprintln(w)
	if r := plan.Router; r != nil {
		keys := "no API key asked for"
		if len(r.Keys) > 0 {
			keys = fmt.Sprintf("%d client API key(s)", len(r.Keys))
		}
		fmt.Fprintf(w, "router on http://%s (llamaboot entry): %s, max_wait %s, max_queue %d", r.Listen, keys, r.MaxWait, r.MaxQueue)
		for _, g := range slices.Sorted(maps.Keys(r.Groups)) {
			fmt.Fprintf(w, ", group %s max_loaded %d", g, r.Groups[g])
		}
		fmt.Fprintln(w)
	}
	for _, in := range plan.Instances {
		in = in.Redacted()
		fmt.Fprintf(w, "\ninstance %s (%s)\n", in.Name, in.Pos)
		fmt.Fprintf(w, "  executable  %s\n", in.Executable)
		fmt.Fprintf(w, "  args        %s\n", config.ShellJoin(in.Cmd))
		var envs []string
		for k, v := range in.Env {
			envs = append(envs, fmt.Sprintf("%s=%q", k, v))
		}
		if in.LibDir != "" {
			envs = append(envs, "LD_LIBRARY_PATH="+in.LibDir+":$LD_LIBRARY_PATH")
		}
		if len(envs) == 0 {
			envs = []string{"(unchanged)"}
		}
		fmt.Fprintf(w, "  env         %s\n", strings.Join(envs, " "))
		fmt.Fprintf(w, "  log         %s\n", in.LogFile)
		fmt.Fprintf(w, "  background  %v\n", in.Background)
		fmt.Fprintf(w, "  url         %s (health: %s/health)\n", in.URL, in.ProbeURL())
		if plan.Router != nil {
			fmt.Fprintf(w, "  routes      %s%s\n", strings.Join(in.RoutedNames(), ", "), routing(in.Routing))
		}
	}
}

// routing says how the router treats an instance: " (on demand, idle
// 15m0s, group gpu)", "" when it starts at boot and stays.
func routing(rt config.Routing) string {
	var parts []string
	if rt.OnDemand {
		parts = append(parts, "on demand")
	}
	if rt.IdleTimeout > 0 {
		parts = append(parts, "stopped after "+rt.IdleTimeout.String()+" idle")
	}
	if rt.Group != "" {
		parts = append(parts, "group "+rt.Group)
	}
	if rt.RouterMode {
		parts = append(parts, "and the models its /models lists")
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func newRunCmd(env Env) *cobra.Command {
	var cfg, app string
	var wait, quiet, replace bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "run [--config F] [--wait]",
		Short: "Launch the instances of the instance file (the old check-and-run-llama-cpp.sh)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p := printer.New(cmd.OutOrStdout(), cmd.ErrOrStderr(), launchPrefix, quiet)
			plan, path, err := loadPlan(p, cfg, app, env)
			if err != nil {
				return reportConfigError(p, err)
			}
			if plan == nil {
				p.Stepf("AUTO_INFER_LLAMA_CPP_CONFIG is not set: nothing to launch")
				return nil
			}
			for _, w := range plan.Warnings {
				p.Warnf("%s", w)
			}
			if err := plan.Runnable(); err != nil {
				return reportConfigError(p, err)
			}
			if !plan.Enabled {
				p.Stepf("%s: master.enable = false: nothing to launch", path)
				return nil
			}
			if len(plan.Instances) == 0 {
				p.Stepf("%s: every instance is disabled: nothing to launch", path)
				return nil
			}
			if plan.Router != nil {
				p.Warnf("%s: [router] is served by llamaboot entry only: run starts every instance, on_demand ones included, and routes nothing", path)
			}
			// Inside a container run by `llamaboot entry`, hand the
			// instances to the supervisor so they are supervised too.
			if sock := control.SocketPath(appDir(app, env)); control.Running(sock) {
				return handOver(p, sock, plan, wait, replace)
			}
			ro := launch.RunOptions{Wait: wait, Timeout: timeout, RecordPath: launch.RunRecordPath(appDir(app, env))}
			if err := launch.Run(cmd.Context(), p, plan, ro); err != nil {
				return exitError(exitStatus(err))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cfg, "config", "", "instance file (env AUTO_INFER_LLAMA_CPP_CONFIG)")
	cmd.Flags().StringVar(&app, "app-dir", "", "app dir (env AUTO_INFER_APP_DIR)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until every instance answers /health with 200")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "readiness timeout with --wait (default: each instance's ready_timeout)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only warnings and errors")
	cmd.Flags().BoolVar(&replace, "replace", false, "beside a supervisor: hand over instances it already runs with other settings (they restart with these)")
	return cmd
}

func handOver(p *printer.Printer, sock string, plan *config.Plan, wait, replace bool) error {
	res, err := control.Adopt(sock, plan, wait, replace)
	for _, line := range res {
		p.Stepf("%s", line)
	}
	if err != nil {
		var re *control.RemoteError
		switch {
		case errors.As(err, &re) && re.BadInput():
			p.Errorf("%s", re.Msg) // the supervisor says what to change
		case !errors.Is(err, control.ErrNotReached):
			p.Errorf("hand instances to the supervisor at %s: %v", sock, err)
		}
		return exitError(exitStatus(err))
	}
	return nil
}
