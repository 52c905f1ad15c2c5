package config

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
)

func TestServerKeysCheckedAgainstFlags(t *testing.T) {
	data := []byte("[master]\nllama_cpp_path = \"/opt/llama/llama-server\"\n[instance.server]\nflash_attn = \"on\"\nthreds = 8\n" +
		"[instance.a.server]\nport = 8080\nctx_sise = 4096\nextra_args = [\"--whatever\"]\n[instance.b.server]\nport = 8081\nno_webui = true\n" +
		"[instance.off.control]\nenabled = false\n[instance.off.server]\nport = 8082\nbogus = 1\n")
	var asked []string
	flags := func(exe string) (Flags, error) {
		asked = append(asked, exe)
		return known("--ctx-size", "--flash-attn", "--port", "--threads", "--no-webui"), nil
	}
	_, err := Parse("cfg.toml", data, Options{ServerFlags: flags})
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("unknown server keys must be errors when the flags are known: %v", err)
	}
	var got []string
	for _, p := range ve.Problems {
		got = append(got, p.String())
	}
	want := []string{
		`cfg.toml:5: instance.server.threds: /opt/llama/llama-server has no flag --threds (did you mean "threads"?)`,
		`cfg.toml:8: instance.a.server.ctx_sise: /opt/llama/llama-server has no flag --ctx-sise (did you mean "ctx_size"?)`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") || len(ve.Warnings) != 0 {
		t.Errorf("problems:\n%s\nwant:\n%s\nwarnings: %v", strings.Join(got, "\n"), strings.Join(want, "\n"), ve.Warnings)
	}
	if len(asked) != 1 || asked[0] != "/opt/llama/llama-server" {
		t.Errorf("flags read for %q, want once for the resolved executable", asked)
	}
}

func TestServerFlagCheckSkipped(t *testing.T) {
	data := []byte("[instance.a.server]\nport = 8080\nctx_sise = 1\n")
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("stat: %w", fs.ErrNotExist), "cfg.toml: server keys: not checked against llama-server's flags (llama-server does not exist here)"},
		{errors.New("llama-server --help did not finish within 20s"), "(llama-server --help did not finish within 20s)"},
	} {
		plan, err := Parse("cfg.toml", data, Options{AppDir: "/nonexistent", ServerFlags: func(string) (Flags, error) { return nil, c.err }})
		if err != nil || len(plan.Warnings) != 1 || !strings.Contains(plan.Warnings[0].String(), c.want) {
			t.Errorf("want one warning %q, got %v %v", c.want, plan, err)
		}
	}
}

// Every problem at once, sorted by line: a misspelt server key is listed
// with a duplicate port, in file order.
func TestFlagProblemsWithOtherProblems(t *testing.T) {
	data := []byte("[instance.a.server]\nport = 8080\n[instance.b.server]\nctx_sise = 1\nport = 8080\n")
	flags := func(string) (Flags, error) { return known("--ctx-size", "--port"), nil }
	_, err := Parse("cfg.toml", data, Options{ServerFlags: flags, AppDir: "/nonexistent"})
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 2 {
		t.Fatalf("want two problems: %v", err)
	}
	text := err.Error()
	misspelt := strings.Index(text, `cfg.toml:4: instance.b.server.ctx_sise: llama-server has no flag --ctx-sise (did you mean "ctx_size"?)`)
	dup := strings.Index(text, "cfg.toml:5: instance.b.server.port: port 8080 is also used")
	if misspelt < 0 || dup < 0 || misspelt > dup {
		t.Errorf("want both, by line:\n%s", text)
	}
}

func TestProblemsSortedByLine(t *testing.T) {
	ps := []Problem{{Pos: Pos{File: "c", Line: 18}}, {Pos: Pos{File: "c", Line: 17}}, {Pos: Pos{File: "b", Line: 30}}}
	sortProblems(ps)
	if ps[0].Pos.File != "b" || ps[1].Pos.Line != 17 || ps[2].Pos.Line != 18 {
		t.Errorf("%v", ps)
	}
}

// known is flags whose args are not known.
func known(names ...string) Flags {
	f := Flags{}
	for _, n := range names {
		f[n] = UnknownArgs
	}
	return f
}

// TestServerValuesCheckedAgainstArgs: a string on a switch once became an
// argument of its own (metrics = "--api-key-file" passed that flag), true
// on a flag that needs a value took the next flag as its value, and an
// empty key became "--". Each is refused at its line (exit 2), whether or
// not STRICT is set; what --help leaves open is not judged.
func TestServerValuesCheckedAgainstArgs(t *testing.T) {
	data := []byte("[instance.a.server]\nport = 8080\nmetrics = \"--api-key-file\"\nalias = true\nflash_attn = \"on\"\n" +
		"log_colors = true\nverbose = 1\nthreads = 4\nslots = false\n\"\" = 1\n\"a b\" = 2\n")
	flags := func(string) (Flags, error) {
		return Flags{"--port": Value, "--metrics": Switch, "--alias": Value, "--flash-attn": OptionalValue,
			"--log-colors": OptionalValue, "--verbose": UnknownArgs, "--threads": Value, "--slots": Switch}, nil
	}
	_, err := Parse("cfg.toml", data, Options{ServerFlags: flags, AppDir: "/nonexistent"})
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("want problems: %v", err)
	}
	var got []string
	for _, p := range ve.Problems {
		got = append(got, p.String())
	}
	want := []string{
		`cfg.toml:3: instance.a.server.metrics: --metrics is a switch (it takes no value): give true or false, not the string "--api-key-file"`,
		`cfg.toml:4: instance.a.server.alias: --alias takes a value (--alias alone would take the next argument as its value): give the value, not a boolean true`,
		`cfg.toml:10: instance.a.server.: is not a flag name ("" would be passed as "--"): server keys are letters, digits, '_' and '-'`,
		`cfg.toml:11: instance.a.server.a b: is not a flag name ("a b" would be passed as "--a b"): server keys are letters, digits, '_' and '-'`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Without the flags (none readable), the key names are still checked.
	_, err = Parse("cfg.toml", []byte("[instance.a.server]\nport = 1\n\"\" = 1\n"), Options{AppDir: "/nonexistent"})
	if err == nil || !strings.Contains(err.Error(), `is not a flag name`) {
		t.Errorf("empty key without flags: %v", err)
	}
}
