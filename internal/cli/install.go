package cli

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/buildinfo"
	"github.com/llamaboot/llamaboot/internal/fetch"
	"github.com/llamaboot/llamaboot/internal/install"
	"github.com/llamaboot/llamaboot/internal/printer"
)

type installFlags struct {
	appDir      string
	sha256      string
	force       bool
	verify      bool
	quiet       bool
	maxEntries  int
	maxBytes    sizeFlag
	maxExpanded sizeFlag
	lockTimeout time.Duration
	keep        int

	refresh    bool
	sha256From string
	download   downloadFlags
	imagePath  string
	withLibs   bool
}

// downloadFlags are the settings of every http(s) download (bundles and
// models).
type downloadFlags struct {
	maxDownload    sizeFlag
	connectTimeout time.Duration
	stallTimeout   time.Duration
	minRate        sizeFlag // bytes per second; 0: no floor
	retries        int
	retryBase      time.Duration
	// lockTimeout bounds the wait for another process fetching the same
	// file (install and entry share --lock-timeout with the install lock).
	lockTimeout time.Duration
}

func (f *downloadFlags) register(cmd *cobra.Command, what string) {
	fl := cmd.Flags()
	f.maxDownload = fetch.DefaultMaxBytes
	fl.Var(&f.maxDownload, "max-download", what+"refuse downloads larger than this (bytes, or with a unit: 64GiB, 500MB)")
	fl.DurationVar(&f.connectTimeout, "connect-timeout", 30*time.Second, what+"connection setup timeout")
	fl.DurationVar(&f.stallTimeout, "stall-timeout", 60*time.Second, what+"abort an attempt that gets less than --min-rate over this long (or no data at all)")
	f.minRate = fetch.DefaultMinRate
	fl.Var(&f.minRate, "min-rate", what+"the least average rate per second over each --stall-timeout window (bytes, or with a unit: 1KiB, 1MB; 0: any data at all will do)")
	fl.IntVar(&f.retries, "retries", 5, what+"attempts after the first on network errors and 5xx")
	fl.DurationVar(&f.retryBase, "retry-delay", time.Second, what+"first retry delay (doubles each time)")
}

func (f *downloadFlags) options(token string) fetch.Options {
	return fetch.Options{
		Token:          token,
		MaxBytes:       int64(f.maxDownload),
		ConnectTimeout: f.connectTimeout,
		StallTimeout:   f.stallTimeout,
		MinRate:        minRate(int64(f.minRate)),
		Retries:        f.retries,
		RetryBase:      f.retryBase,
		LockTimeout:    f.lockTimeout,
	}
}

// minRate is --min-rate as fetch takes it: 0 (no floor) is negative there,
// where 0 means the default.
func minRate(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}

func (f downloadFlags) withLockTimeout(d time.Duration) *downloadFlags {
	f.lockTimeout = d
	return &f
}

func (f *installFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.appDir, "app-dir", "", "app dir holding cache/ and llama-cpp/ (env AUTO_INFER_APP_DIR, default /soft/app)")
	fl.StringVar(&f.sha256, "sha256", "", "expected SHA-256 of the archive (env AUTO_INFER_LLAMA_CPP_PKG_SHA256)")
	fl.BoolVar(&f.force, "force", false, "reinstall even if the same bundle is installed")
	fl.BoolVar(&f.verify, "verify", false, "re-hash the source instead of trusting its size, mtime and inode (an image: apply its layers again and compare the installed bundle file by file)")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "print only warnings and errors")
	fl.IntVar(&f.maxEntries, "max-entries", archive.DefaultMaxEntries, "refuse archives with more entries")
	f.maxBytes = archive.DefaultMaxBytes
	fl.Var(&f.maxBytes, "max-bytes", "refuse archives writing more than this to disk (holes in sparse files not counted; bytes, or with a unit: 64GiB, 500MB)")
	fl.Var(&f.maxExpanded, "max-expanded", "refuse archives whose files' lengths, holes included (and for an image, the members skipped), add up to more than this (default 4 × --max-bytes)")
	fl.DurationVar(&f.lockTimeout, "lock-timeout", 10*time.Minute, "how long to wait for another install into the same app dir (or another process fetching the same file)")
	fl.IntVar(&f.keep, "keep", install.DefaultKeep, "previous bundles kept for llamaboot rollback")
	fl.BoolVar(&f.refresh, "refresh", false, "for a URL: ask the server whether the bundle changed (ETag / If-Modified-Since); for an image tag: resolve it again")
	fl.BoolVar(&f.withLibs, "with-libs", false, "for an image: also copy, from its lower layers, the shared libraries the bundle needs and this container lacks (env AUTO_INFER_LLAMA_CPP_WITH_LIBS=1)")
	fl.StringVar(&f.imagePath, "image-path", "", "for an image: the directory holding llama-server (env AUTO_INFER_LLAMA_CPP_IMAGE_PATH, default /app)")
	fl.StringVar(&f.sha256From, "sha256-from", "", "for a URL: take the expected SHA-256 from this SHA256SUMS-style file")
	f.download.register(cmd, "for a URL: ")
}

func (f *installFlags) options(source string, env Env, p *printer.Printer) install.Options {
	imagePath := f.imagePath
	if imagePath == "" {
		imagePath = env("AUTO_INFER_LLAMA_CPP_IMAGE_PATH")
	}
	sum := f.sha256
	if sum == "" {
		sum = env("AUTO_INFER_LLAMA_CPP_PKG_SHA256")
	}
	return install.Options{
		AppDir:       appDir(f.appDir, env),
		Source:       source,
		SHA256:       sum,
		Force:        f.force,
		Verify:       f.verify,
		Limits:       archive.Limits{MaxEntries: f.maxEntries, MaxBytes: int64(f.maxBytes), MaxExpanded: int64(f.maxExpanded)},
		LockTimeout:  f.lockTimeout,
		Keep:         keepOption(f.keep),
		EntryPoints:  install.EntryPointNames,
		Self:         self(),
		Installer:    buildinfo.Version,
		Printer:      p,
		SHA256From:   f.sha256From,
		Refresh:      f.refresh,
		Download:     f.download.withLockTimeout(f.lockTimeout).options(env("AUTO_INFER_LLAMA_CPP_PKG_TOKEN")),
		ImagePath:    imagePath,
		RegistryAuth: env("AUTO_INFER_REGISTRY_AUTH"),
		WithLibs:     f.withLibs || Switch(env, "AUTO_INFER_LLAMA_CPP_WITH_LIBS", p),
	}
}

const pkgPrefix = "[llama-cpp-pkg]"

func newInstallCmd(env Env) *cobra.Command {
	var f installFlags
	cmd := &cobra.Command{
		Use:   "install [SOURCE]",
		Short: "Install a llama.cpp bundle from a file, an http(s) URL or a container image (SOURCE defaults to $AUTO_INFER_LLAMA_CPP_PKG_PATH)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			source := env("AUTO_INFER_LLAMA_CPP_PKG_PATH")
			if len(args) == 1 {
				source = args[0]
			}
			p := printer.New(cmd.OutOrStdout(), cmd.ErrOrStderr(), pkgPrefix, f.quiet)
			if source == "" {
				p.Errorf("no package given: pass SOURCE or set AUTO_INFER_LLAMA_CPP_PKG_PATH to a llama.cpp archive")
				return exitError(ExitBadInput)
			}
			// Ctrl-C or SIGTERM stops a download or extraction promptly; the
			// old bundle stays and a partial download is resumed next time.
			o := f.options(source, env, p)
			o.Interrupt = func(ctx context.Context) (context.Context, context.CancelFunc) {
				return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
			}
			_, err := install.Install(context.Background(), o)
			if err != nil {
				p.Errorf("%v", err)
				return exitError(exitStatus(err))
			}
			return nil
		},
	}
	f.register(cmd)
	return cmd
}

// keepOption maps --keep onto Options.Keep, where 0 means the default.
func keepOption(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

func newRollbackCmd(env Env) *cobra.Command {
	var app string
	var quiet bool
	var lockTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "rollback",
		Short: "Activate the previous kept bundle (atomically; the current one is kept, so a second rollback goes back)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p := printer.New(cmd.OutOrStdout(), cmd.ErrOrStderr(), pkgPrefix, quiet)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if _, err := install.Rollback(ctx, appDir(app, env), lockTimeout, p); err != nil {
				p.Errorf("%v", err)
				return exitError(exitStatus(err))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&app, "app-dir", "", "app dir holding llama-cpp/ (env AUTO_INFER_APP_DIR, default /soft/app)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only warnings and errors")
	cmd.Flags().DurationVar(&lockTimeout, "lock-timeout", 10*time.Minute, "how long to wait for an install into the same app dir")
	return cmd
}
