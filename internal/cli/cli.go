// Package cli maps llamaboot's command line (and the names of the old shell
// helpers) onto the install, config, launch and supervise packages, and
// turns their errors into exit statuses.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/llamaboot/llamaboot/internal/buildinfo"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

// Exit statuses.
const (
	ExitOK       = 0
	ExitFailure  = 1
	ExitBadInput = 2
)

// aliases maps the old helper names to subcommands.
var aliases = map[string]string{
	"check-and-run-llama-cpp.sh": "run",
	"install-llama-cpp-pkg.sh":   "install",
	"get-llama-cpp-pkg.sh":       "install",
	"infer-dev-entry.sh":         "entry",
}

// Env reads the environment; tests pass their own.
type Env func(string) string

// Main runs llamaboot with os.Args-style args and returns the exit status.
func Main(args []string) int {
	return run(args, os.Stdin, os.Stdout, os.Stderr, os.Getenv)
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer, env Env) int {
	rest := args[1:]
	if sub, ok := aliases[filepath.Base(args[0])]; ok {
		rest = append([]string{sub}, rest...)
	}
	root := newRoot(stdout, stderr, env, rest)
	root.SetArgs(rest)
	root.SetIn(stdin)
	err := root.Execute()
	if err == nil {
		return ExitOK
	}
	var ex exitError
	if errors.As(err, &ex) {
		return int(ex)
	}
	fmt.Fprintf(stderr, "llamaboot: %v\n", err)
	return exitStatus(err)
}

// exitError carries a status after the command already said what happened.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// exitStatus is 2 when the error is the user's input at fault.
func exitStatus(err error) int {
	var bad interface{ BadInput() bool }
	if errors.As(err, &bad) && bad.BadInput() {
		return ExitBadInput
	}
	return ExitFailure
}

// usageError is a command-line mistake (unknown flag, missing argument).
type usageError struct{ error }

func (usageError) BadInput() bool { return true }

func newRoot(stdout, stderr io.Writer, env Env, args []string) *cobra.Command {
	root := &cobra.Command{
		Use:           "llamaboot",
		Short:         "Install llama.cpp bundles and run llama-server instances in containers",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// --version prints what version prints. Not through cobra's Version and
	// SetVersionTemplate: a template links text/template, whose reflective
	// method calls keep every exported method of every type in the binary
	// (2 MB more), and every command pays for that at start-up.
	root.Flags().BoolP("version", "v", false, "version for llamaboot")
	help := root.HelpFunc()
	root.SetHelpFunc(func(c *cobra.Command, args []string) {
		// A root command that runs nothing lands here for --version.
		if c == root && flagSet(c, "version") && !flagSet(c, "help") {
			fmt.Fprintln(c.OutOrStdout(), buildinfo.String())
			return
		}
		help(c, args)
	})
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	// Only the command named on the command line is built when it names
	// one: each command's flags and defaults cost every start-up
	// (healthcheck runs every few seconds). Help, suggestions for a
	// misspelt command and completion see them all.
	subs := subcommands(env)
	if len(args) > 0 {
		for _, c := range subs {
			if c.name == args[0] {
				subs = []subcommand{c}
				break
			}
		}
	}
	for _, c := range subs {
		root.AddCommand(c.build())
	}
	return root
}

func flagSet(c *cobra.Command, name string) bool {
	v, err := c.Flags().GetBool(name)
	return err == nil && v
}

// subcommand is a command by its name, built on demand.
type subcommand struct {
	name  string
	build func() *cobra.Command
}

func subcommands(env Env) []subcommand {
	control := func(op supervise.Op) subcommand {
		return subcommand{op.String(), func() *cobra.Command { return newControlCmd(op, env) }}
	}
	return []subcommand{
		{"install", func() *cobra.Command { return newInstallCmd(env) }},
		{"rollback", func() *cobra.Command { return newRollbackCmd(env) }},
		{"plan", func() *cobra.Command { return newPlanCmd(env) }},
		{"doctor", func() *cobra.Command { return newDoctorCmd(env) }},
		{"fetch-models", func() *cobra.Command { return newFetchModelsCmd(env) }},
		{"run", func() *cobra.Command { return newRunCmd(env) }},
		{"entry", func() *cobra.Command { return newEntryCmd(env) }},
		{"status", func() *cobra.Command { return newStatusCmd(env) }},
		{"healthcheck", func() *cobra.Command { return newHealthcheckCmd(env) }},
		control(supervise.OpStart),
		control(supervise.OpStop),
		control(supervise.OpRestart),
		{"logs", func() *cobra.Command { return newLogsCmd(env) }},
		{"reload", func() *cobra.Command { return newReloadCmd(env) }},
		{"version", func() *cobra.Command {
			return &cobra.Command{
				Use:   "version",
				Short: "Print version, commit and Go version",
				Args:  cobra.NoArgs,
				Run: func(cmd *cobra.Command, _ []string) {
					fmt.Fprintln(cmd.OutOrStdout(), buildinfo.String())
				},
			}
		}},
	}
}

// appDir resolves --app-dir, then AUTO_INFER_APP_DIR, then /soft/app.
func appDir(flag string, env Env) string {
	if flag != "" {
		return flag
	}
	if v := env("AUTO_INFER_APP_DIR"); v != "" {
		return v
	}
	return "/soft/app"
}

func self() string {
	p, err := os.Executable()
	if err != nil {
		return ""
	}
	return p
}
