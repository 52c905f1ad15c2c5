package entry

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/llamaboot/llamaboot/internal/config"
)

// A reload that brings in a model by URL not downloaded yet is refused
// with the key's line: a reload does not fetch, and a server must not
// start without its model.
func TestReloadRefusesModelNotDownloaded(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, "[master]\nllama_cpp_path = \"/bin/true\"\n[instance.a.server]\nport = 1\n[instance.b.server]\nport = 2\nmodel = \"https://example.invalid/m.gguf\"\n")
	e := New(Options{ServeOnBoot: true, ConfigPath: cfg, Config: config.Options{AppDir: dir, ModelsDir: filepath.Join(dir, "models")}})
	_, desired, _, err := e.loadDesired()
	if err == nil || desired != nil {
		t.Fatalf("accepted: %v", desired)
	}
	if !strings.Contains(err.Error(), "cfg.toml:7: instance.b.server.model: model https://example.invalid/m.gguf is not downloaded yet") {
		t.Errorf("error: %v", err)
	}
}
