package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/install"
	"github.com/llamaboot/llamaboot/internal/preflight"
	"github.com/llamaboot/llamaboot/internal/printer"
)

func newDoctorCmd(env Env) *cobra.Command {
	var cfg, app string
	cmd := &cobra.Command{
		Use:   "doctor [--config F]",
		Short: "Check that the bundle will load in this container, every backend included, on the devices each instance asks for; exit 1 when something will not",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p := printer.New(cmd.OutOrStdout(), cmd.ErrOrStderr(), launchPrefix, false)
			plan, path, err := loadPlan(p, cfg, app, env)
			if err != nil {
				return reportConfigError(p, err)
			}
			var findings []preflight.Finding
			var what string
			if plan != nil {
				findings = preflight.Instances(context.Background(), plan.Instances, os.Environ(), preflight.System{})
				what = fmt.Sprintf("%d instance(s) of %s", len(plan.Instances), path)
			} else {
				exe := filepath.Join(install.InstallDir(appDir(app, env)), "bin", "llama-server")
				if _, err := os.Stat(exe); err != nil {
					p.Errorf("no config and no bundle to check: %s is not there; pass --config FILE or install a bundle first", exe)
					return exitError(ExitBadInput)
				}
				ld := filepath.Dir(exe)
				if v := env("LD_LIBRARY_PATH"); v != "" {
					ld += ":" + v
				}
				findings = preflight.Check([]preflight.Target{{Executable: exe, LDLibraryPath: ld}}, preflight.System{})
				what = exe
			}
			for _, f := range findings {
				p.Errorf("%s", findingLine(f))
			}
			if len(findings) > 0 {
				p.Errorf("%d problem(s) found in %s", len(findings), what)
				return exitError(ExitFailure)
			}
			p.Stepf("no problems found in %s: every library and backend loads here, on the devices asked for", what)
			return nil
		},
	}
	cmd.Flags().StringVar(&cfg, "config", "", "instance file (env AUTO_INFER_LLAMA_CPP_CONFIG); without one, the installed llama-server is checked")
	cmd.Flags().StringVar(&app, "app-dir", "", "app dir where the installed bundle is looked for (env AUTO_INFER_APP_DIR)")
	return cmd
}

// findingLine is how a finding is said in doctor, plan and at boot; one
// about the bundle alone (no config) names its file, which it starts with.
func findingLine(f preflight.Finding) string {
	if f.Instance == "" {
		return f.String()
	}
	return fmt.Sprintf("instance %s: %s", f.Instance, f)
}

// preflightWarnings says the plan's findings as warnings (plans are often
// made elsewhere than where they run).
func preflightWarnings(p *printer.Printer, plan *config.Plan) {
	for _, f := range preflight.Instances(context.Background(), plan.Instances, os.Environ(), preflight.System{}) {
		p.Warnf("%s", strings.TrimSpace(findingLine(f)))
	}
}
