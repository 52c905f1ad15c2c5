package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/llamaboot/llamaboot/internal/entry"
	"github.com/llamaboot/llamaboot/internal/install"
	"github.com/llamaboot/llamaboot/internal/printer"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

func newEntryCmd(env Env) *cobra.Command {
	var f installFlags
	var grace time.Duration
	var policy supervise.Policy
	cmd := &cobra.Command{
		Use:   "entry [-- CMD ARGS…]",
		Short: "Container entrypoint: install if asked, serve if asked, run CMD, supervise as PID 1",
		Long: `Boot sequence (all driven by the AUTO_INFER_* variables):
  1. AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT=1 and AUTO_INFER_LLAMA_CPP_PKG_PATH set: install the bundle
  2. put check-and-run-llama-cpp.sh, install-llama-cpp-pkg.sh, get-llama-cpp-pkg.sh in <app-dir>/llama-cpp
  3. AUTO_INFER_LLAMA_CPP_ON_BOOT=1 and AUTO_INFER_LLAMA_CPP_CONFIG set: start and supervise every enabled instance
  4. run CMD (if given) and supervise until it exits or the container is stopped
AUTO_INFER_LLAMA_CPP_STRICT=1 makes a failed install or an invalid config fatal (exit 2).`,
		RunE: func(cmd *cobra.Command, args []string) error {
			app := appDir(f.appDir, env)
			pkgPrinter := printer.New(cmd.OutOrStdout(), cmd.ErrOrStderr(), pkgPrefix, f.quiet)
			code := entry.Run(entry.Options{
				AppDir:  app,
				Getenv:  env,
				Environ: os.Environ(),
				Cmd:     args,
				Self:    self(),
				Out:     cmd.OutOrStdout(),
				Err:     cmd.ErrOrStderr(),
				Grace:   grace,
				Policy:  policy,
				InstallOptions: func(source string) install.Options {
					return f.options(source, env, pkgPrinter)
				},
			})
			if code != 0 {
				return exitError(code)
			}
			return nil
		},
	}
	f.register(cmd)
	// CMD's own flags are not ours: stop parsing at the first argument.
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().DurationVar(&grace, "grace", 8*time.Second, "on stop, time between SIGTERM and SIGKILL (keep under docker stop's 10 s)")
	cmd.Flags().DurationVar(&policy.BackoffMin, "restart-backoff", time.Second, "first delay before restarting a crashed instance (doubles per crash)")
	cmd.Flags().DurationVar(&policy.BackoffMax, "restart-backoff-max", 30*time.Second, "longest delay between restarts")
	cmd.Flags().IntVar(&policy.CrashLoop, "crash-loop", 5, "quick crashes in a row (each under 10 s) before an instance is marked failed")
	return cmd
}

func newStatusCmd(env Env) *cobra.Command {
	var app string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show the installed bundle and each supervised instance",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := appDir(app, env)
			sock := supervise.SocketPath(dir)
			st, err := supervise.GetStatus(sock)
			if err != nil {
				if !errors.Is(err, supervise.ErrNoSupervisor) {
					return err
				}
				st = supervise.Status{Instances: []supervise.InstanceStatus{}}
				if m, err := install.ReadMarker(install.InstallDir(dir)); err == nil {
					st.Bundle = m
				}
			}
			if st.Instances == nil {
				st.Instances = []supervise.InstanceStatus{}
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(cmd.OutOrStdout(), dir, sock, st)
			return nil
		},
	}
	cmd.Flags().StringVar(&app, "app-dir", "", "app dir (env AUTO_INFER_APP_DIR)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printStatus(w io.Writer, app, sock string, st supervise.Status) {
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
	}
	if st.Supervisor == nil {
		fmt.Fprintf(w, "supervisor: none running (no answer on %s)\n", sock)
		return
	}
	s := st.Supervisor
	fmt.Fprintf(w, "supervisor: pid %d, up %.0fs", s.PID, s.UptimeS)
	if len(s.Cmd) > 0 {
		fmt.Fprintf(w, ", command %q (pid %d)", strings.Join(s.Cmd, " "), s.CmdPID)
	}
	fmt.Fprintln(w)
	if len(st.Instances) == 0 {
		fmt.Fprintln(w, "instances: none")
		return
	}
	fmt.Fprintf(w, "%-20s %-10s %7s %6s %8s %9s  %-24s %s\n", "INSTANCE", "STATE", "PID", "PORT", "RESTARTS", "UPTIME", "LAST EXIT", "LOG")
	for _, in := range st.Instances {
		last := "-"
		if in.LastExit != nil {
			last = *in.LastExit
		}
		fmt.Fprintf(w, "%-20s %-10s %7d %6d %8d %8.0fs  %-24s %s\n", in.Name, in.State, in.PID, in.Port, in.Restarts, in.UptimeS, last, in.LogFile)
	}
}

func newControlCmd(op string, env Env) *cobra.Command {
	var app string
	cmd := &cobra.Command{
		Use:   op + " NAME",
		Short: strings.ToUpper(op[:1]) + op[1:] + " a supervised instance (through the supervisor's socket)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			lines, err := supervise.Control(supervise.SocketPath(appDir(app, env)), op, args[0])
			if err != nil {
				return err
			}
			for _, l := range lines {
				fmt.Fprintln(cmd.OutOrStdout(), launchPrefix, l)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&app, "app-dir", "", "app dir (env AUTO_INFER_APP_DIR)")
	return cmd
}
