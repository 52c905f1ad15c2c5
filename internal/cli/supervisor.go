package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/control"
	"github.com/llamaboot/llamaboot/internal/entry"
	"github.com/llamaboot/llamaboot/internal/install"
	"github.com/llamaboot/llamaboot/internal/launch"
	"github.com/llamaboot/llamaboot/internal/models"
	"github.com/llamaboot/llamaboot/internal/preflight"
	"github.com/llamaboot/llamaboot/internal/printer"
	"github.com/llamaboot/llamaboot/internal/router"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

func newEntryCmd(env Env) *cobra.Command {
	var f installFlags
	var mf modelFlags
	var grace time.Duration
	var listen string
	var policy supervise.Policy
	var watchConfig bool
	var watchEvery time.Duration
	cmd := &cobra.Command{
		Use:   "entry [-- CMD ARGS…]",
		Short: "Container entrypoint: install if asked, serve if asked, run CMD, supervise as PID 1",
		Long: `Boot sequence (all driven by the AUTO_INFER_* variables):
  1. AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT=1 and AUTO_INFER_LLAMA_CPP_PKG_PATH set: install the bundle
  2. put check-and-run-llama-cpp.sh, install-llama-cpp-pkg.sh, get-llama-cpp-pkg.sh in <app-dir>/llama-cpp
  3. AUTO_INFER_LLAMA_CPP_ON_BOOT=1 and AUTO_INFER_LLAMA_CPP_CONFIG set: start and supervise every enabled
     instance; one whose model is a URL starts once its download is done (state "downloading" until
     then, "failed" with the reason if it cannot be fetched; the others are not held up)
  4. run CMD (if given) and supervise until it exits or the container is stopped
AUTO_INFER_LLAMA_CPP_STRICT=1 makes a failed install, an invalid config or a failed model download fatal
(exit 2; models are then all fetched before anything starts).
SIGHUP (and llamaboot reload) reloads the config served; --watch (or AUTO_INFER_LLAMA_CPP_WATCH=1) also
reloads it when its content changes.
--listen ADDR (or AUTO_INFER_LLAMA_CPP_METRICS_ADDR) serves /livez, /readyz and /metrics over HTTP; off by default.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			p := printer.New(cmd.OutOrStdout(), cmd.ErrOrStderr(), launchPrefix, false)
			pkgPrinter := printer.New(cmd.OutOrStdout(), cmd.ErrOrStderr(), pkgPrefix, f.quiet)
			app := appDir(f.appDir, env)
			strict := Switch(env, "AUTO_INFER_LLAMA_CPP_STRICT", p)
			code := entry.Run(entry.Options{
				AppDir:       app,
				Environ:      os.Environ(),
				Cmd:          args,
				Self:         self(),
				Out:          cmd.OutOrStdout(),
				Err:          cmd.ErrOrStderr(),
				Grace:        grace,
				Policy:       policy,
				Strict:       strict,
				Listen:       listenAddr(listen, env),
				GetPkgOnBoot: Switch(env, "AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT", p),
				PkgPath:      env("AUTO_INFER_LLAMA_CPP_PKG_PATH"),
				Install: func(ctx context.Context, source string) error {
					_, err := install.Install(ctx, f.options(source, env, pkgPrinter))
					return err
				},
				ServeOnBoot: Switch(env, "AUTO_INFER_LLAMA_CPP_ON_BOOT", p),
				ConfigPath:  env("AUTO_INFER_LLAMA_CPP_CONFIG"),
				Config:      configOptions(app, env),
				Watch:       watchConfig || Switch(env, "AUTO_INFER_LLAMA_CPP_WATCH", p),
				WatchEvery:  watchEvery,
				Models:      mf.entryOptions(env, f.download.withLockTimeout(f.lockTimeout)),
			})
			if code != 0 {
				return exitError(code)
			}
			return nil
		},
	}
	f.register(cmd)
	mf.register(cmd)
	// CMD's own flags are not ours: stop parsing at the first argument.
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().StringVar(&listen, "listen", "", "serve /livez, /readyz and /metrics on this address, e.g. :9100 (env AUTO_INFER_LLAMA_CPP_METRICS_ADDR; default: nothing listens)")
	cmd.Flags().DurationVar(&grace, "grace", 8*time.Second, "on stop, time between SIGTERM and SIGKILL (keep under docker stop's 10 s)")
	cmd.Flags().DurationVar(&policy.BackoffMin, "restart-backoff", time.Second, "first delay before restarting a crashed instance (doubles per crash)")
	cmd.Flags().DurationVar(&policy.BackoffMax, "restart-backoff-max", 30*time.Second, "longest delay between restarts")
	cmd.Flags().BoolVar(&watchConfig, "watch", false, "reload the config when its content changes (env AUTO_INFER_LLAMA_CPP_WATCH=1); follows editors' rename-into-place and ConfigMap ..data swaps")
	cmd.Flags().DurationVar(&watchEvery, "watch-interval", 2*time.Second, "with --watch, how often the config's content is checked")
	cmd.Flags().IntVar(&policy.CrashLoop, "crash-loop", 5, "quick crashes in a row (each under 10 s) before an instance is marked failed")
	return cmd
}

// listenAddr is --listen, else AUTO_INFER_LLAMA_CPP_METRICS_ADDR.
func listenAddr(flag string, env Env) string {
	if flag != "" {
		return flag
	}
	return env("AUTO_INFER_LLAMA_CPP_METRICS_ADDR")
}

func newStatusCmd(env Env) *cobra.Command {
	var app string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show the installed bundle, each supervised instance, and instances started by plain run",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := appDir(app, env)
			sock := control.SocketPath(dir)
			st, err := control.GetStatus(sock)
			if err != nil {
				if !errors.Is(err, control.ErrNoSupervisor) {
					return err
				}
				st = control.Status{Instances: []control.InstanceStatus{}}
				if m, err := install.ReadMarker(install.InstallDir(dir)); err == nil {
					st.Bundle = m
				}
			}
			if st.Instances == nil {
				st.Instances = []control.InstanceStatus{}
			}
			st.Unsupervised = unsupervised(dir)
			kept := install.Previous(dir)
			if kept == nil {
				kept = []install.Kept{}
			}
			addDevices(st.Instances)
			replaced := replacedBundles(dir, st.Instances)
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(struct {
					control.Status
					Active   string           `json:"active_bundle"`
					Previous []install.Kept   `json:"previous_bundles"`
					Replaced []replacedBundle `json:"replaced_bundles"`
				}{st, install.Active(dir), kept, replaced})
			}
			printStatus(cmd.OutOrStdout(), dir, sock, st, kept)
			for _, r := range replaced {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", r.Instance, r.Note)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&app, "app-dir", "", "app dir (env AUTO_INFER_APP_DIR)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printRouterModels lists a router-mode instance's models under its row:
// "  models: a (loaded, port 41235), b (unloaded)".
func printRouterModels(w io.Writer, in control.InstanceStatus) {
	if in.ModelsErr != "" {
		fmt.Fprintf(w, "  models: cannot tell (%s)\n", in.ModelsErr)
		return
	}
	if len(in.Models) == 0 {
		return
	}
	parts := make([]string, len(in.Models))
	for i, m := range in.Models {
		parts[i] = fmt.Sprintf("%s (%s)", m.ID, m.Status)
		if m.Status == "loaded" && m.Port > 0 {
			parts[i] = fmt.Sprintf("%s (loaded, port %d)", m.ID, m.Port)
		}
	}
	fmt.Fprintf(w, "  models: %s\n", strings.Join(parts, ", "))
}

func printStatus(w io.Writer, app, sock string, st control.Status, kept []install.Kept) {
	switch b := st.Bundle.(type) {
	case nil:
		fmt.Fprintf(w, "bundle: none installed in %s\n", install.InstallDir(app))
	default:
		raw, _ := json.Marshal(b)
		var m install.Marker
		_ = json.Unmarshal(raw, &m)
		tag := m.BuildTag
		if tag == "" {
			tag = "unknown build"
		}
		fmt.Fprintf(w, "bundle: %s (%s, %s layout) from %s, sha256 %s, installed %s\n", m.ArchiveName, tag, m.Layout,
			m.SourcePath, m.SHA256, time.Unix(m.InstalledAtUnix, 0).UTC().Format(time.RFC3339))
		if v := install.Active(app); v != "" {
			fmt.Fprintf(w, "active: %s\n", v)
		}
	}
	for i, k := range kept {
		note := ""
		if i == 0 {
			note = "; llamaboot rollback activates it"
		}
		fmt.Fprintf(w, "previous: %s (%s, build %s, installed %s)%s\n", k.Version, k.Marker.ArchiveName, orDash(k.Marker.BuildTag),
			time.Unix(k.Marker.InstalledAtUnix, 0).UTC().Format(time.RFC3339), note)
	}
	defer printUnsupervised(w, app, st.Unsupervised)
	if st.Supervisor == nil {
		fmt.Fprintf(w, "supervisor: none running (no answer on %s)\n", sock)
		return
	}
	s := st.Supervisor
	fmt.Fprintf(w, "supervisor: pid %d, up %.0fs", s.PID, s.UptimeS)
	if len(s.Cmd) > 0 {
		fmt.Fprintf(w, ", command %s (pid %d)", config.ShellJoin(s.Cmd), s.CmdPID)
	}
	fmt.Fprintln(w)
	if len(st.Instances) == 0 {
		fmt.Fprintln(w, "instances: none")
		return
	}
	// Columns stay aligned: the name column widens for a long name, and a
	// reason too long for its column (a start failure names paths) is
	// said in full on a line of its own under the row.
	nameW := 20
	for _, in := range st.Instances {
		nameW = max(nameW, utf8.RuneCountInString(in.Name))
	}
	fmt.Fprintf(w, "%-*s %-10s %7s %6s %8s %9s  %-*s %s\n", nameW, "INSTANCE", "STATE", "PID", "PORT", "RESTARTS", "UPTIME", whyWidth, "LAST EXIT (WHY)", "LOG")
	for _, in := range st.Instances {
		// No process: no pid and no uptime, rather than 0 and 0s.
		pid, uptime := "-", "-"
		if in.PID > 0 {
			pid, uptime = fmt.Sprint(in.PID), fmt.Sprintf("%.0fs", in.UptimeS)
		}
		why, long := lastExit(in), ""
		if utf8.RuneCountInString(why) > whyWidth || strings.ContainsAny(why, "\n\t") {
			why, long = "(below)", strings.Join(strings.Fields(why), " ")
		}
		fmt.Fprintf(w, "%-*s %-10s %7s %6d %8d %9s  %-*s %s\n", nameW, in.Name, in.State, pid, in.Port, in.Restarts, uptime, whyWidth, why, in.LogFile)
		if long != "" {
			fmt.Fprintf(w, "  last exit (why): %s\n", long)
		}
		printRouterModels(w, in)
	}
	printDevices(w, st.Instances)
	printDownloads(w, st.Downloads)
	printRouter(w, st.Router)
}

// printRouter shows the router's routes: each instance's names, what the
// router sees of it, requests in flight and waiting, and its last use.
func printRouter(w io.Writer, raw any) {
	if raw == nil {
		return
	}
	var rep router.Report
	b, _ := json.Marshal(raw)
	if json.Unmarshal(b, &rep) != nil {
		return
	}
	fmt.Fprintf(w, "router: http://%s\n", rep.Listen)
	fmt.Fprintf(w, "  %-20s %-24s %9s %6s %9s  %s\n", "INSTANCE", "STATE", "IN FLIGHT", "QUEUED", "LAST USE", "NAMES")
	for _, in := range rep.Instances {
		last := "-"
		if !in.LastUse.IsZero() {
			last = fmt.Sprintf("%.0fs ago", time.Since(in.LastUse).Seconds())
		}
		fmt.Fprintf(w, "  %-20s %-24s %9d %6d %9s  %s\n", in.Instance, in.State, in.InFlight, in.Queued, last, strings.Join(in.Names, ", "))
	}
}

// addDevices fills in the devices each running instance runs on, as
// llama-server listed them in its log when it last started.
func addDevices(ins []control.InstanceStatus) {
	for i := range ins {
		in := &ins[i]
		if in.PID <= 0 {
			continue
		}
		r, ok := preflight.DevicesFromLog(in.LogFile)
		if !ok {
			continue
		}
		in.Devices = make([]control.Device, len(r.Devices))
		for k, d := range r.Devices {
			in.Devices[k] = control.Device{Name: d.Name, Description: d.Description}
		}
		// llama-server warns about its --gpu-layers even when they are 0
		// or no GPU is visible on purpose: only news when GPU layers are asked.
		in.NoUsableGPU = r.NoGPU && in.AsksGPULayers
	}
}

// printDevices says which devices each running instance runs on (see
// addDevices).
func printDevices(w io.Writer, ins []control.InstanceStatus) {
	header := false
	for _, in := range ins {
		if len(in.Devices) == 0 {
			continue
		}
		if !header {
			fmt.Fprintln(w, "devices (as each server listed them at its last start):")
			header = true
		}
		var ds []string
		for _, d := range in.Devices {
			ds = append(ds, d.Name+" "+d.Description)
		}
		note := ""
		if in.NoUsableGPU {
			note = " — llama-server found no usable GPU: it runs on the CPU"
		}
		fmt.Fprintf(w, "  %-20s %s%s\n", in.Name, strings.Join(ds, "; "), note)
	}
}

// lastExit is how an instance's last process ended and why: "exit code
// 1 (crash)", "killed by SIGTERM (restart requested)", or why it could not
// start.
// Once a later process is ready, how the one before ended is history: the
// table drops it (--json keeps it).
// whyWidth is the LAST EXIT (WHY) column's width in the status table.
const whyWidth = 40

func lastExit(in control.InstanceStatus) string {
	switch {
	case in.State == "ready":
		return "-"
	case in.Error != "" && in.LastReason != "":
		return in.LastReason + ": " + in.Error // could not start: port taken, executable missing
	case in.Error != "":
		return in.Error // waiting for its model, or the download failed
	case in.LastExit == nil:
		return "-"
	case in.LastReason != "":
		return *in.LastExit + " (" + in.LastReason + ")"
	}
	return *in.LastExit
}

// printDownloads shows the boot's model downloads, one line each.
func printDownloads(w io.Writer, raw any) {
	if raw == nil {
		return
	}
	var ds []models.Download
	b, _ := json.Marshal(raw)
	if json.Unmarshal(b, &ds) != nil || len(ds) == 0 {
		return
	}
	fmt.Fprintln(w, "model downloads:")
	for _, d := range ds {
		line := fmt.Sprintf("  %-11s %s", d.State, d.File)
		switch {
		case d.State == models.Downloading && d.Total > 0:
			line += fmt.Sprintf(": %d%% (%s of %s, %s/s, %.0fs left)", d.DoneBytes*100/d.Total, printer.Bytes(d.DoneBytes), printer.Bytes(d.Total), printer.Bytes(int64(d.Rate)), d.ETA)
		case d.State == models.Downloading:
			line += fmt.Sprintf(": %s so far", printer.Bytes(d.DoneBytes))
		case d.Error != "":
			line += ": " + d.Error
		}
		fmt.Fprintf(w, "%s (for %s)\n", line, strings.Join(d.Instances, ", "))
	}
}

var controlShort = map[supervise.Op]string{
	supervise.OpStart:   "Start a supervised instance that is stopped or failed, and report when it is ready",
	supervise.OpStop:    "Stop a supervised instance; it stays down until start or restart",
	supervise.OpRestart: "Stop a supervised instance and start it again now (whatever its restart policy), and report when it is ready",
}

func newControlCmd(op supervise.Op, env Env) *cobra.Command {
	var app string
	var noWait bool
	cmd := &cobra.Command{
		Use:   op.String() + " NAME",
		Short: controlShort[op],
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("%s needs one instance name: llamaboot %s NAME (llamaboot status lists them)", op, op)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := appDir(app, env)
			lines, err := control.Control(control.SocketPath(dir), op, args[0], !noWait)
			if errors.Is(err, control.ErrNoSupervisor) {
				return controlUnsupervised(cmd.OutOrStdout(), dir, op, args[0], err)
			}
			for _, l := range lines {
				fmt.Fprintln(cmd.OutOrStdout(), launchPrefix, l)
			}
			if errors.Is(err, control.ErrNotReached) {
				return exitError(ExitFailure) // the lines said what happened
			}
			return err
		},
	}
	cmd.Flags().StringVar(&app, "app-dir", "", "app dir (env AUTO_INFER_APP_DIR)")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the request is accepted instead of when the instance is ready (or down)")
	return cmd
}

// unsupervised lists the live background instances plain `run` recorded.
func unsupervised(app string) []control.UnsupervisedStatus {
	recs, _ := launch.ReadRunRecords(launch.RunRecordPath(app))
	var out []control.UnsupervisedStatus
	for _, r := range recs {
		if r.Alive() {
			out = append(out, control.UnsupervisedStatus{Name: r.Name, PID: r.PID, Alive: true, Port: r.Port, URL: r.URL, LogFile: r.LogFile})
		}
	}
	return out
}

func printUnsupervised(w io.Writer, app string, list []control.UnsupervisedStatus) {
	if len(list) == 0 {
		return
	}
	fmt.Fprintf(w, "started by plain run, not supervised (recorded in %s; stop with llamaboot stop NAME):\n", launch.RunRecordPath(app))
	for _, in := range list {
		fmt.Fprintf(w, "  %-20s pid %-7d port %-6d %s  log %s\n", in.Name, in.PID, in.Port, in.URL, in.LogFile)
	}
}

// controlUnsupervised handles op on name when no supervisor answers: a
// stop of an instance plain `run` started stops it; anything else says
// where things are.
func controlUnsupervised(w io.Writer, app string, op supervise.Op, name string, noSup error) error {
	path := launch.RunRecordPath(app)
	if op == supervise.OpStop {
		msg, err := launch.StopRecorded(path, name)
		if errors.Is(err, launch.ErrNotRecorded) {
			return fmt.Errorf("%w, and no instance %q started by plain run is running (recorded in %s)", noSup, name, path)
		}
		if err != nil {
			return fmt.Errorf("stop %s: %w", name, err)
		}
		fmt.Fprintln(w, launchPrefix, msg)
		return nil
	}
	live := unsupervised(app)
	for _, in := range live {
		if in.Name == name {
			// run starts the whole config and checks every port first, so
			// the others plain run started must stop too.
			var stops []string
			for _, o := range live {
				stops = append(stops, "llamaboot stop "+o.Name)
			}
			return fmt.Errorf("%s was started by plain run (pid %d, log %s) and is not supervised, so llamaboot cannot %s it: %s, then llamaboot run again",
				name, in.PID, in.LogFile, op, strings.Join(stops, "; "))
		}
	}
	return fmt.Errorf("%w: start instances with llamaboot run, or boot with llamaboot entry to supervise them", noSup)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// replacedBundle is an instance whose process runs another bundle than the
// active one (an install or rollback since it started) or an executable
// since removed.
type replacedBundle struct {
	Instance string `json:"instance"`
	PID      int    `json:"pid"`
	Exe      string `json:"exe"`     // what /proc/PID/exe names, " (deleted)" cut
	Running  string `json:"running"` // its bundle version, "" outside the app dir
	Deleted  bool   `json:"deleted"`
	Active   string `json:"active"`
	Note     string `json:"note"`
}

// replacedBundles checks each running instance's /proc/PID/exe against the
// active bundle. A process that cannot be read (another user's) is left out.
func replacedBundles(app string, ins []control.InstanceStatus) []replacedBundle {
	out := []replacedBundle{}
	active := install.Active(app)
	real, err := filepath.EvalSymlinks(app) // /proc/PID/exe names the real path
	if err != nil {
		real = app
	}
	versions := filepath.Join(real, "llama-cpp.versions") + "/"
	for _, in := range ins {
		if in.PID <= 0 {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", in.PID))
		if err != nil {
			continue
		}
		r := replacedBundle{Instance: in.Name, PID: in.PID, Active: active}
		r.Exe, r.Deleted = strings.CutSuffix(exe, " (deleted)")
		if rest, ok := strings.CutPrefix(r.Exe, versions); ok {
			r.Running, _, _ = strings.Cut(rest, "/")
		}
		use := "restart it to use the active bundle " + buildOf(app, active)
		switch {
		case r.Running != "" && r.Running != active:
			r.Note = fmt.Sprintf("runs %s (replaced) — llamaboot restart %s to use %s", buildOf(app, r.Running), in.Name, buildOf(app, active))
		case r.Deleted:
			r.Note = fmt.Sprintf("runs %s, since removed (replaced) — %s", r.Exe, use)
		default:
			continue
		}
		out = append(out, r)
	}
	return out
}

// buildOf names a version by its build tag when its marker has one
// ("b1000 (b1000-0a1400886242)"), else by the version dir.
func buildOf(app, version string) string {
	if version == "" {
		return "(none active)"
	}
	m, err := install.ReadMarker(filepath.Join(app, "llama-cpp.versions", version))
	if err != nil || m.BuildTag == "" {
		return version
	}
	return m.BuildTag + " (" + version + ")"
}
