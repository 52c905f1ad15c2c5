package config

import (
	"testing"
)

func TestLogKeys(t *testing.T) {
	src := `
[instance.control]
log_max_size = "10MiB"
log_to_stdout = true
[instance.a.server]
port = 1
[instance.b.control]
log_max_size = 2048
log_max_files = 7
log_to_stdout = false
[instance.b.server]
port = 2
[instance.c.control]
log_max_size = "1.5GB"
[instance.c.server]
port = 3
`
	if err := schemaValidate(t, compileSchema(t), "cfg.toml", []byte(src), ""); err != nil {
		t.Errorf("schema refuses valid log keys: %v", err)
	}
	plan, err := Parse("cfg.toml", []byte(src), Options{AppDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		size   int64
		files  int
		stdout bool
	}{"a": {10 << 20, 3, true}, "b": {2048, 7, false}, "c": {1.5e9, 3, true}}
	for _, in := range plan.Instances {
		w := want[in.Name]
		if in.LogMaxSize != w.size || in.LogMaxFiles != w.files || in.LogToStdout != w.stdout {
			t.Errorf("%s: size %d files %d stdout %v, want %+v", in.Name, in.LogMaxSize, in.LogMaxFiles, in.LogToStdout, w)
		}
	}
	plan, err = Parse("cfg.toml", []byte("[instance.d.server]\nport = 4\n"), Options{AppDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if in := plan.Instances[0]; in.LogMaxSize != 100<<20 || in.LogMaxFiles != 3 || in.LogToStdout {
		t.Errorf("defaults: size %d files %d stdout %v, want 100MiB, 3, false", in.LogMaxSize, in.LogMaxFiles, in.LogToStdout)
	}
}
