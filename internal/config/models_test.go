package config

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestModelSources(t *testing.T) {
	h1, h2 := strings.Repeat("a", 64), strings.Repeat("B", 64)
	cfg := `
[models.shared]
url = "https://huggingface.co/org/repo/resolve/main/q-00001-of-00002.gguf?token=s3cret"
sha256 = ["` + h1 + `", "` + h2 + `"]
path = "qwen/q-00001-of-00002.gguf"

[instance.server]
ctx_size = 8

[instance.inline.control]
model_sha256 = "` + h1 + `"
[instance.inline.server]
port = 1
model = "http://ghp_user@mirror.example/m/small.gguf"

[instance.a.server]
port = 2
model = "models.shared"

[instance.b.server]
port = 3
model = "models.shared"
model_sha256 = "` + h1 + `"

[instance.plain.server]
port = 4
model = "models.local.gguf"
`
	_, err := Parse("cfg.toml", []byte(cfg), Options{AppDir: "/app"})
	if err == nil || !strings.Contains(err.Error(), `cfg.toml:23: instance.b.server.model_sha256: the model comes from [models.shared]: put its digest there as sha256`) {
		t.Fatalf("a pin beside a models.NAME reference: %v", err)
	}
	cfg = strings.Replace(cfg, "model_sha256 = \""+h1+"\"\n\n[instance.plain", "\n[instance.plain", 1)
	plan, err := Parse("cfg.toml", []byte(cfg), Options{AppDir: "/app"})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Instance{}
	for _, in := range plan.Instances {
		byName[in.Name] = in
	}
	in := byName["inline"]
	if got := strings.Join(in.Cmd, " "); got != "--ctx-size 8 --port 1 --model /app/models/small.gguf" {
		t.Errorf("inline cmd = %q", got)
	}
	if s := in.ModelSource; s == nil || s.URL != "http://ghp_user@mirror.example/m/small.gguf" || s.Shown != "http://mirror.example/m/small.gguf" ||
		len(s.SHA256) != 1 || s.SHA256[0] != h1 || s.Parts != 1 || in.Model != "/app/models/small.gguf" {
		t.Errorf("inline source %+v", in.ModelSource)
	}
	a, b := byName["a"], byName["b"]
	if a.ModelSource != b.ModelSource || a.Model != "/app/models/qwen/q-00001-of-00002.gguf" || a.ModelSource.Parts != 2 ||
		a.ModelSource.Name != "shared" || a.ModelSource.SHA256[1] != strings.ToLower(h2) {
		t.Errorf("shared source %+v / %+v", a.ModelSource, b.ModelSource)
	}
	if got := strings.Join(b.Cmd, " "); got != "--ctx-size 8 --port 3 --model /app/models/qwen/q-00001-of-00002.gguf" {
		t.Errorf("b cmd = %q", got)
	}
	// Parity: a path stays as written, even one that starts with "models."
	// (a reference names no .gguf file).
	if got := strings.Join(byName["plain"].Cmd, " "); got != "--ctx-size 8 --port 4 --model models.local.gguf" || byName["plain"].ModelSource != nil {
		t.Errorf("plain cmd = %q", got)
	}
	out, _ := json.Marshal(plan.Instances)
	if strings.Contains(string(out), "s3cret") || strings.Contains(string(out), "ghp_user") || !strings.Contains(string(out), `"url":"https://huggingface.co/org/repo/resolve/main/q-00001-of-00002.gguf?REDACTED"`) {
		t.Errorf("plan JSON: %s", out)
	}
	missing := plan.MissingModels(func(string) bool { return false })
	if len(missing) != 4 || !strings.Contains(missing[0].Msg, "is not downloaded yet to /app/models/small.gguf") {
		t.Errorf("missing = %v", missing)
	}
	// AUTO_INFER_MODELS_DIR moves the default location.
	plan, _ = Parse("cfg.toml", []byte(cfg), Options{AppDir: "/app", ModelsDir: "/data/models"})
	for _, in := range plan.Instances {
		if in.ModelSource != nil && !strings.HasPrefix(in.Model, "/data/models/") {
			t.Errorf("%s: model at %s", in.Name, in.Model)
		}
	}
}

// TestModelSourceBounds: a relative path stays under the models dir, and a
// split's part count is 1..MaxParts, each refused at its line.
func TestModelSourceBounds(t *testing.T) {
	for _, c := range []struct{ table, want string }{
		{`url = "http://h/m.gguf"` + "\n" + `path = "../../outside/evil.gguf"`, `cfg.toml:3: models.m.path: "../../outside/evil.gguf" leaves the models dir`},
		{`url = "http://h/m.gguf"` + "\n" + `path = "sub/../../evil.gguf"`, `cfg.toml:3: models.m.path: "sub/../../evil.gguf" leaves the models dir`},
		{`url = "http://h/m-00001-of-00000.gguf"`, `cfg.toml:2: models.m.url: http://h/m-00001-of-00000.gguf says it is one of 0 parts; a split model has 1 to 512 parts`},
		{`url = "http://h/m-00001-of-99999.gguf"`, `cfg.toml:2: models.m.url: http://h/m-00001-of-99999.gguf says it is one of 99999 parts`},
		{`url = "http://h/m-00001-of-00003.gguf"` + "\n" + `path = "m-00001-of-00002.gguf"`, `cfg.toml:3: models.m.path: "m-00001-of-00002.gguf" must end in -00001-of-00003.gguf`},
	} {
		cfg := "[models.m]\n" + c.table + "\n[instance.a.server]\nport = 1\nmodel = \"models.m\"\n"
		if _, err := Parse("cfg.toml", []byte(cfg), Options{AppDir: "/app"}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s:\n got %v\nwant %s", c.table, err, c.want)
		}
	}
	cfg := "[models.m]\nurl = \"http://h/m-00001-of-00512.gguf\"\npath = \"/abs/elsewhere/m-00001-of-00512.gguf\"\n[models.n]\nurl = \"http://h/n.gguf\"\npath = \"sub/./n.gguf\"\n" +
		"[instance.a.server]\nport = 1\nmodel = \"models.m\"\n[instance.b.server]\nport = 2\nmodel = \"models.n\"\n"
	plan, err := Parse("cfg.toml", []byte(cfg), Options{AppDir: "/app"})
	if err != nil {
		t.Fatal(err)
	}
	if a, b := plan.Instances[0], plan.Instances[1]; a.Model != "/abs/elsewhere/m-00001-of-00512.gguf" || a.ModelSource.Parts != 512 || b.Model != "/app/models/sub/n.gguf" {
		t.Errorf("models at %s (%d parts) and %s", a.Model, a.ModelSource.Parts, b.Model)
	}
}
