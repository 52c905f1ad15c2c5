package cli

import (
	"context"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/llamaboot/llamaboot/internal/models"
	"github.com/llamaboot/llamaboot/internal/printer"
)

const modelsPrefix = "[models]"

// modelFlags are the settings of model downloads, for fetch-models and
// entry.
type modelFlags struct {
	refresh  bool
	parallel int
	download downloadFlags
}

func (f *modelFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.refresh, "refresh-models", false, "ask the servers whether downloaded models changed (ETag / If-Modified-Since)")
	cmd.Flags().IntVar(&f.parallel, "parallel", 3, "model files downloaded at once")
}

func (f *modelFlags) options(env Env, p *printer.Printer) models.Options {
	return models.Options{
		Token:      env("AUTO_INFER_MODEL_TOKEN"),
		TokenHosts: strings.FieldsFunc(env("AUTO_INFER_MODEL_TOKEN_HOSTS"), func(r rune) bool { return r == ',' || r == ' ' }),
		Getenv:     env,
		Refresh:    f.refresh,
		Parallel:   f.parallel,
		Download:   f.download.options(""),
		Printer:    p,
	}
}

// entryOptions are the model settings of entry, which shares its download
// flags with the bundle install.
func (f *modelFlags) entryOptions(env Env, d *downloadFlags) models.Options {
	o := f.options(env, nil)
	o.Download = d.options("")
	return o
}

func newFetchModelsCmd(env Env) *cobra.Command {
	var f modelFlags
	var cfg, app string
	cmd := &cobra.Command{
		Use:   "fetch-models [--config F]",
		Short: "Download the models the instance file gives by URL (for an init container); entry does it on boot",
		Long: `Downloads every model given by URL (model = "https://…", or a [models.NAME] table) into
<app-dir>/models (AUTO_INFER_MODELS_DIR), all parts of a split GGUF, each file once, --parallel at a
time. Resumable, retried, checked against sha256 / model_sha256 before it is renamed into place. A file
whose marker vouches for it is used without contacting the server; --refresh-models asks the server
whether it changed. AUTO_INFER_MODEL_TOKEN is sent as a bearer token to the hosts in
AUTO_INFER_MODEL_TOKEN_HOSTS (unset: the one host all models are on), a model's token_env to its
own URL, HF_TOKEN to Hugging Face URLs only.
Exit status: 0 all there; 2 a wrong URL, token or checksum; 1 network or disk trouble.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p := printer.New(cmd.OutOrStdout(), cmd.ErrOrStderr(), modelsPrefix, false)
			plan, path, err := requirePlan(p, cfg, app, env)
			if err != nil {
				return err
			}
			fetcher := models.New(plan.Instances, f.options(env, p))
			if !fetcher.Needs() {
				p.Stepf("%s gives no model by URL: nothing to fetch", path)
				return nil
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			failed := fetcher.Run(ctx, nil)
			if len(failed) == 0 {
				p.Stepf("every model is in place")
				return nil
			}
			for _, name := range models.Sorted(failed) {
				p.Errorf("instance %s: %v", name, failed[name])
			}
			if models.BadInput(failed) {
				return exitError(ExitBadInput)
			}
			return exitError(ExitFailure)
		},
	}
	f.register(cmd)
	f.download.register(cmd, "")
	cmd.Flags().DurationVar(&f.download.lockTimeout, "lock-timeout", 10*time.Minute, "how long to wait for another process fetching the same file while its download does not grow")
	cmd.Flags().StringVar(&cfg, "config", "", "instance file (env AUTO_INFER_LLAMA_CPP_CONFIG)")
	cmd.Flags().StringVar(&app, "app-dir", "", "app dir; models go to <app-dir>/models unless AUTO_INFER_MODELS_DIR is set (env AUTO_INFER_APP_DIR)")
	return cmd
}
