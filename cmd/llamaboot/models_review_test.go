package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFetchModelsRefusesBadPlaces: a relative path that leaves the models
// dir and a split with 0 or too many parts are refused at their line
// (exit 2), and nothing is written anywhere.
func TestFetchModelsRefusesBadPlaces(t *testing.T) {
	dir := t.TempDir()
	models := filepath.Join(dir, "app", "models")
	for _, c := range []struct{ table, want string }{
		{"url = \"http://127.0.0.1:1/m.gguf\"\npath = \"../../outside/evil.gguf\"", `cfg.toml:3: models.m.path: "../../outside/evil.gguf" leaves the models dir`},
		{"url = \"http://127.0.0.1:1/m-00001-of-00000.gguf\"", `cfg.toml:2: models.m.url: http://127.0.0.1:1/m-00001-of-00000.gguf says it is one of 0 parts`},
		{"url = \"http://127.0.0.1:1/m-00001-of-99999.gguf\"", `cfg.toml:2: models.m.url: http://127.0.0.1:1/m-00001-of-99999.gguf says it is one of 99999 parts`},
	} {
		cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[models.m]\n%s\n[instance.a.server]\nport = 1\nmodel = \"models.m\"\n", c.table))
		r := runLB(t, []string{"AUTO_INFER_MODELS_DIR=" + models}, "fetch-models", "--config", cfg)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: want exit 2 and %q: %v", c.table, c.want, r)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("files written beside the config: %v", ents)
	}
}
