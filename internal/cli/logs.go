package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/llamaboot/llamaboot/internal/control"
)

func newLogsCmd(env Env) *cobra.Command {
	var app string
	var follow bool
	var tail int
	cmd := &cobra.Command{
		Use:   "logs [NAME] [-f] [--tail N]",
		Short: "Print a supervised instance's log (every instance's, prefixed [NAME], without a name); -f follows it",
		Long: `Prints the last lines of an instance's log, read through the supervisor (so across rotated
files), and with -f every line after them as it is written, across rotations and restarts, until the
instance is removed or the supervisor stops. Without NAME every supervised instance's lines are
interleaved, each prefixed [NAME].`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageError{fmt.Errorf("logs takes at most one instance name: llamaboot logs [NAME] (llamaboot status lists them)")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if tail < 0 {
				return usageError{fmt.Errorf("--tail must be 0 or more lines, not %d", tail)}
			}
			req := control.LogsRequest{Tail: tail, Follow: follow}
			if len(args) == 1 {
				req.Name = args[0]
			}
			dir := appDir(app, env)
			err := control.Logs(control.SocketPath(dir), req, cmd.OutOrStdout())
			if errors.Is(err, control.ErrNoSupervisor) {
				// No supervisor to read through; say where a plain run's log is.
				for _, in := range unsupervised(dir) {
					if in.Name == req.Name || req.Name == "" {
						return fmt.Errorf("%w; %s was started by plain run (pid %d): its log is %s (tail -f it)", err, in.Name, in.PID, in.LogFile)
					}
				}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&app, "app-dir", "", "app dir (env AUTO_INFER_APP_DIR)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing lines as they are written")
	cmd.Flags().IntVar(&tail, "tail", 100, "how many of the last lines to print first (0: none)")
	return cmd
}
