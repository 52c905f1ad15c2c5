package cli

import (
	"bytes"
	"testing"
)

// Only the command named on the command line is built, so each
// subcommand's name must be the name cobra dispatches on, and its help
// must read the same as when every command is built.
func TestOnlyTheNamedCommandIsBuilt(t *testing.T) {
	env := func(string) string { return "" }
	subs := subcommands(env)
	if len(subs) < 15 {
		t.Fatalf("only %d subcommands", len(subs))
	}
	for _, c := range subs {
		if got := c.build().Name(); got != c.name {
			t.Errorf("subcommand listed as %q is named %q", c.name, got)
		}
		help := func(args []string) string {
			var out bytes.Buffer
			root := newRoot(&out, &out, env, args)
			root.SetArgs([]string{c.name, "--help"})
			if err := root.Execute(); err != nil {
				t.Fatalf("%s --help: %v", c.name, err)
			}
			return out.String()
		}
		alone, all := help([]string{c.name, "--help"}), help(nil)
		if alone != all || len(alone) < 50 {
			t.Errorf("%s --help built alone:\n%s\nbuilt with the rest:\n%s", c.name, alone, all)
		}
		root := newRoot(&bytes.Buffer{}, &bytes.Buffer{}, env, []string{c.name})
		if n := len(root.Commands()); n != 1 {
			t.Errorf("%s: %d commands built, want 1", c.name, n)
		}
	}
	if n := len(newRoot(&bytes.Buffer{}, &bytes.Buffer{}, env, []string{"instal"}).Commands()); n != len(subs) {
		t.Errorf("a misspelt command builds %d commands, want all %d (for suggestions)", n, len(subs))
	}
}
