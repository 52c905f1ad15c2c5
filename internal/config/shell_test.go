package config

import (
	"slices"
	"testing"
)

func TestArgChanges(t *testing.T) {
	for _, c := range []struct {
		name string
		a, b []string
		want []string
	}{
		{"value", []string{"--port", "1", "--ctx-size", "1024"}, []string{"--port", "1", "--ctx-size", "4096"}, []string{"ctx_size 1024 → 4096"}},
		{"added and removed", []string{"--port", "1", "--threads", "4"}, []string{"--port", "1", "--no-webui"}, []string{"threads 4 removed", "no_webui added"}},
		{"bare flag gains a value", []string{"--flash-attn"}, []string{"--flash-attn", "on"}, []string{"flash_attn (set) → on"}},
		{"negative value", []string{"--n-gpu-layers", "-1"}, []string{"--n-gpu-layers", "99"}, []string{"n_gpu_layers -1 → 99"}},
		{"list", []string{"--lora", "a", "--lora", "b"}, []string{"--lora", "a"}, []string{"lora a b → a"}},
		{"quoted", []string{"--alias", "x"}, []string{"--alias", "my model"}, []string{"alias x → 'my model'"}},
		{"extra args first", []string{"pos", "--port", "1"}, []string{"--port", "1"}, []string{"args pos removed"}},
		{"secret", []string{"--api-key", "old"}, []string{"--api-key", "new", "--hf-token", "t"}, []string{"api_key changed", "hf_token added"}},
		{"order only", []string{"--a", "--b"}, []string{"--b", "--a"}, nil},
	} {
		if got := ArgChanges(c.a, c.b); !slices.Equal(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func TestShellJoin(t *testing.T) {
	if got := ShellJoin([]string{"--alias", "my model", "--x", "it's", ""}); got != `--alias 'my model' --x 'it'\''s' ''` {
		t.Errorf("%s", got)
	}
}
