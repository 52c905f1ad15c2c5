package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/llamaboot/llamaboot/internal/control"
	"github.com/llamaboot/llamaboot/internal/printer"
)

func newReloadCmd(env Env) *cobra.Command {
	var app string
	var dryRun, noWait bool
	cmd := &cobra.Command{
		Use:   "reload [--dry-run]",
		Short: "Re-read the config the supervisor serves and apply the difference (SIGHUP to entry does the same)",
		Long: `Asks the supervisor (llamaboot entry) to re-read AUTO_INFER_LLAMA_CPP_CONFIG with its overrides and
validate it fully. An invalid config changes nothing: every problem is printed with its file:line (exit 2)
and the previous plan keeps running. Otherwise new instances are started, removed ones stopped, those
whose command line, environment, gpu_ids, log or other settings changed are restarted, and unchanged
ones are left alone (same pid). --dry-run prints the difference and does nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p := printer.New(cmd.OutOrStdout(), cmd.ErrOrStderr(), launchPrefix, false)
			rep, err := control.Reload(control.SocketPath(appDir(app, env)), dryRun, !noWait)
			if err != nil {
				return err
			}
			for _, w := range rep.Warnings {
				p.Warnf("%s", w)
			}
			for _, l := range rep.Lines {
				fmt.Fprintln(cmd.OutOrStdout(), l)
			}
			if rep.NotReady {
				return exitError(ExitFailure)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&app, "app-dir", "", "app dir (env AUTO_INFER_APP_DIR)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print what would change; change nothing")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the change is applied instead of when started and restarted instances are ready")
	return cmd
}
