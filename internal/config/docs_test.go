package config

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// docs/config.md's example gives the command line it shows.
func TestDocsExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)## Example\n\n```toml\n(.*?)```\n.*?\n```\n(llama-server .*?)\n```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("no example (toml block, then the command line) in docs/config.md")
	}
	plan, err := Parse("example.toml", m[1], Options{AppDir: "/nonexistent", Exists: func(string) bool { return false }})
	if err != nil {
		t.Fatal(err)
	}
	in := plan.Instances[0]
	if got := "llama-server " + strings.Join(in.Cmd, " "); got != string(m[2]) {
		t.Errorf("docs say\n%s\nplan gives\n%s", m[2], got)
	}
	if in.Env["CUDA_VISIBLE_DEVICES"] != "0" || in.LogFile != "/var/log/llama/llama-server-qwen.log" {
		t.Errorf("env %v, log %s", in.Env, in.LogFile)
	}
}
