package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/llamaboot/llamaboot/internal/control"
)

// newHealthcheckCmd is the probe for Docker's HEALTHCHECK and Kubernetes'
// exec probes: it asks the supervisor over its control socket, so the
// image needs no curl and the probe no port.
func newHealthcheckCmd(env Env) *cobra.Command {
	var app, instance string
	var live bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "healthcheck [--instance NAME] [--live]",
		Short: "Exit 0 when the supervisor answers and every instance is ready (--live: none is hung or failed)",
		Long: `Asks the running supervisor (llamaboot entry) over its control socket and prints one line.
Exit 0: healthy. Exit 1: not healthy (the line says which instance and why) or no supervisor answers
within --timeout. Exit 2: --instance names no supervised instance.
Ready: every supervised instance (or the one named) is ready and answers its liveness probes.
Live (--live): the supervisor answers and no instance is failed or being killed as hung.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("healthcheck takes no arguments, got %s (--instance NAME judges one instance)", strings.Join(args, " "))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			h, err := control.GetHealth(control.SocketPath(appDir(app, env)), instance, live, timeout)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), h.Summary)
			if !h.OK {
				return exitError(ExitFailure)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&app, "app-dir", "", "app dir (env AUTO_INFER_APP_DIR)")
	cmd.Flags().StringVar(&instance, "instance", "", "judge only this instance")
	cmd.Flags().BoolVar(&live, "live", false, "liveness only: the supervisor answers and no instance is hung or failed")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for the supervisor's answer")
	return cmd
}
