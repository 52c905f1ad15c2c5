package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestRedactArgs(t *testing.T) {
	for _, c := range []struct{ in, want []string }{
		{[]string{"--api-key", "s3cret", "--port", "8080"}, []string{"--api-key", Redacted, "--port", "8080"}},
		{[]string{"--api-key=s3cret"}, []string{"--api-key=" + Redacted}},
		{[]string{"-hft", "hf_abc", "--hf-token", "hf_def"}, []string{"-hft", Redacted, "--hf-token", Redacted}},
		{[]string{"--api-key-file", "/run/keys/a"}, []string{"--api-key-file", "/run/keys/a"}},
		{[]string{"--ssl-key-file", "/k.pem", "--model", "m.gguf"}, []string{"--ssl-key-file", "/k.pem", "--model", "m.gguf"}},
		{[]string{"--api-key"}, []string{"--api-key"}},
	} {
		if got := RedactArgs(c.in); !slices.Equal(got, c.want) {
			t.Errorf("RedactArgs(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// Whatever a command line holds, no secret flag's value survives.
func FuzzRedactArgs(f *testing.F) {
	f.Add("--api-key s3cret --port 1")
	f.Add("--hf-token=x -hft y")
	f.Fuzz(func(t *testing.T, line string) {
		args := strings.Fields(line)
		got := RedactArgs(args)
		if len(got) != len(args) {
			t.Fatalf("%d args became %d", len(args), len(got))
		}
		// Walk the line as llama-server parses it: a flag that takes a
		// value consumes the next argument, whatever it looks like.
		for i := 0; i < len(args); i++ {
			a := args[i]
			if flag, _, ok := strings.Cut(a, "="); ok && secretFlag(flag) {
				if got[i] != flag+"="+Redacted {
					t.Fatalf("%q shown as %q", a, got[i])
				}
				continue
			}
			if secretFlag(a) && i+1 < len(args) {
				i++
				if got[i] != Redacted {
					t.Fatalf("value of %s shown: %q", a, got[i])
				}
			}
		}
	})
}

func TestAPIKey(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys")
	if err := os.WriteFile(keyFile, []byte("\n  filekey \nsecond\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		in   Instance
		want string
	}{
		{"flag", Instance{Cmd: []string{"--api-key", "a,b"}}, "a"},
		{"flag=", Instance{Cmd: []string{"--api-key=k1"}}, "k1"},
		{"env", Instance{Env: map[string]string{"LLAMA_API_KEY": "envkey"}}, "envkey"},
		{"file", Instance{Cmd: []string{"--api-key-file", keyFile}}, "filekey"},
		{"file env", Instance{Env: map[string]string{"LLAMA_ARG_API_KEY_FILE": keyFile}}, "filekey"},
	} {
		got, err := c.in.APIKey()
		if err != nil || got != c.want {
			t.Errorf("%s: APIKey() = %q, %v; want %q", c.name, got, err, c.want)
		}
	}
	if _, err := (Instance{Cmd: []string{"--port", "1"}}).APIKey(); err != ErrNoAPIKey {
		t.Errorf("no key: %v", err)
	}
	if _, err := (Instance{Cmd: []string{"--api-key-file", dir}}).APIKey(); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("a directory as key file: %v", err)
	}
}

func TestRouterMode(t *testing.T) {
	for _, c := range []struct {
		cmd  []string
		env  map[string]string
		want bool
	}{
		{[]string{"--models-dir", "/m"}, nil, true},
		{[]string{"--models-preset", "/p.ini"}, nil, true},
		{nil, map[string]string{"LLAMA_ARG_MODELS_DIR": "/m"}, true},
		{[]string{"--models-dir", "/m", "--model", "/m/a.gguf"}, nil, false},
		{[]string{"--models-dir", "/m", "-hf", "org/repo"}, nil, false},
		{[]string{"--model", "/m/a.gguf"}, nil, false},
	} {
		if got := (Instance{Cmd: c.cmd, Env: c.env}).RouterMode(); got != c.want {
			t.Errorf("RouterMode(%q, %v) = %v", c.cmd, c.env, got)
		}
	}
}
