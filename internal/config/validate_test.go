package config

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// validationCases has one case per rule. The JSON Schema must reject those
// not listed in schemaBlind.
var validationCases = []struct {
	name      string
	toml      string
	overrides string
	want      []string // each must appear in the error, with its file:line
}{
	{"syntax", "[instance.a.server]\nport = \n", "", []string{"cfg.toml:2:", "TOML syntax error"}},
	{"unknown top key", "[instanse.a.server]\nport = 1\n", "", []string{`cfg.toml:1: instanse: unknown key in the top level (did you mean "instance"?)`, "instance: missing"}},
	{"unknown master key", "[master]\nenabled = true\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: master.enabled: unknown key in [master] (did you mean "enable"?)`}},
	{"unknown control key", "[instance.a.control]\ngpu_id = \"0\"\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: instance.a.control.gpu_id: unknown key in [instance.a.control] (did you mean "gpu_ids"?)`}},
	{"unknown global control key", "[instance.control]\nlogdir = \"/x\"\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: instance.control.logdir: unknown key`, `"log_dir"`}},
	{"unknown instance sub-table", "[instance.a.sever]\nport = 1\n", "", []string{`cfg.toml:1: instance.a.sever: unknown key in [instance.a] (did you mean "server"?)`}},
	{"port range", "[instance.a.server]\nport = 70000\n", "", []string{"cfg.toml:2: instance.a.server.port: must be an integer from 1 to 65535, not an integer 70000"}},
	{"port type", "[instance.a.server]\nport = \"8080\"\n", "", []string{`cfg.toml:2: instance.a.server.port: must be an integer from 1 to 65535, not the string "8080"`}},
	{"gpu_ids pattern", "[instance.a.control]\ngpu_ids = \"0, 1\"\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: instance.a.control.gpu_ids: "0, 1" is not`}},
	{"gpu_ids int", "[instance.a.control]\ngpu_ids = 0\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: instance.a.control.gpu_ids: must be a string: write gpu_ids = "0"`}},
	{"flash_attn bool", "[instance.server]\nflash_attn = true\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: instance.server.flash_attn: must be "on", "off" or "auto" (llama-server needs a value): write flash_attn = "on"`}},
	{"flash_attn word", "[instance.a.server]\nport=1\nflash_attn = \"yes\"\n", "", []string{`cfg.toml:3: instance.a.server.flash_attn: must be "on", "off" or "auto", not the string "yes"`}},
	{"ctx_size", "[instance.a.server]\nport=1\nctx_size = -5\n", "", []string{"cfg.toml:3: instance.a.server.ctx_size: must be an integer ≥ 0"}},
	{"n_predict", "[instance.a.server]\nport=1\nn_predict = -2\n", "", []string{"cfg.toml:3: instance.a.server.n_predict: must be an integer ≥ -1"}},
	{"n_gpu_layers", "[instance.a.server]\nport=1\nn_gpu_layers = 1.5\n", "", []string{"cfg.toml:3: instance.a.server.n_gpu_layers: must be an integer ≥ -1, not a float 1.5"}},
	{"log_max_size unit", "[instance.a.control]\nlog_max_size = \"100 parsecs\"\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: instance.a.control.log_max_size: must be a size such as "100MiB"`, `not the string "100 parsecs"`}},
	{"log_max_size negative", "[instance.control]\nlog_max_size = -1\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: instance.control.log_max_size: must be a size`}},
	{"log_max_files zero", "[instance.a.control]\nlog_max_files = 0\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: instance.a.control.log_max_files: must be an integer from 1 to 1000`}},
	{"log_max_files string", "[instance.a.control]\nlog_max_files = \"3\"\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: instance.a.control.log_max_files: must be an integer from 1 to 1000 (the live file counts: 1 keeps no older file), not the string "3"`}},
	{"log_to_stdout bool", "[instance.control]\nlog_to_stdout = \"yes\"\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: instance.control.log_to_stdout: must be true or false, not the string "yes"`}},
	{"background bool", "[instance.a.control]\nbackground = \"yes\"\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: instance.a.control.background: must be true or false, not the string "yes"`}},
	{"enable bool", "[master]\nenable = 1\n[instance.a.server]\nport=1\n", "", []string{"cfg.toml:2: master.enable: must be true or false, not an integer 1"}},
	{"llama_cpp_path empty", "[master]\nllama_cpp_path = \"\"\n[instance.a.server]\nport=1\n", "", []string{"cfg.toml:2: master.llama_cpp_path: must not be empty"}},
	{"extra_args type", "[instance.a.server]\nport=1\nextra_args = \"--verbose\"\n", "", []string{`cfg.toml:3: instance.a.server.extra_args: must be a list of strings`}},
	{"extra_args items", "[instance.a.server]\nport=1\nextra_args = [\"-v\", 3]\n", "", []string{`cfg.toml:3: instance.a.server.extra_args: item 2 must be a string, not an integer 3`}},
	{"nested server table", "[instance.a.server]\nport=1\n[instance.a.server.sampling]\ntemp = 1.0\n", "", []string{"cfg.toml:3: instance.a.server.sampling: nested tables are not allowed"}},
	{"models url missing", "[models.q]\nsha256 = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n[instance.a.server]\nmodel = \"models.q\"\n", "", []string{"cfg.toml:1: models.q.url: missing"}},
	{"models unknown key", "[models.q]\nurl = \"https://h/q.gguf\"\nsha = \"x\"\n[instance.a.server]\nmodel = \"models.q\"\n", "", []string{`cfg.toml:3: models.q.sha: unknown key in [models.q] (did you mean "sha256"?)`}},
	{"models bad sha256", "[models.q]\nurl = \"https://h/q.gguf\"\nsha256 = \"abc\"\n[instance.a.server]\nmodel = \"models.q\"\n", "", []string{`cfg.toml:3: models.q.sha256: the string "abc" is not a SHA-256 hex digest`}},
	{"models url scheme", "[models.q]\nurl = \"ftp://h/q.gguf\"\n[instance.a.server]\nmodel = \"models.q\"\n", "", []string{`cfg.toml:2: models.q.url: must be an http(s) URL of a .gguf file, not the string "ftp://h/q.gguf"`}},
	{"model reference unknown", "[models.qwen]\nurl = \"https://h/q.gguf\"\n[instance.a.server]\nmodel = \"models.qwem\"\n", "", []string{`cfg.toml:4: instance.a.server.model: "models.qwem" names no [models.qwem] table (did you mean "models.qwen"?)`}},
	{"model url not the first part", "[instance.a.server]\nmodel = \"https://h/m-00002-of-00003.gguf?sig=s3cret\"\n", "", []string{`cfg.toml:2: instance.a.server.model: https://h/m-00002-of-00003.gguf?REDACTED is part 00002 of a split model; name the first part (-00001-of-00003.gguf)`}},
	{"model_sha256 without a URL", "[instance.a.control]\nmodel_sha256 = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n[instance.a.server]\nmodel = \"/m.gguf\"\n", "", []string{`cfg.toml:2: instance.a.control.model_sha256: applies only to a model given by URL; model is the string "/m.gguf"`}},
	{"split pins count", "[models.q]\nurl = \"https://h/m-00001-of-00003.gguf\"\nsha256 = [\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]\n[instance.a.server]\nmodel = \"models.q\"\n", "", []string{"cfg.toml:3: models.q.sha256: lists 2 digests for a model of 3 file(s)"}},
	{"two URLs one file", "[instance.a.server]\nport = 1\nmodel = \"https://h1/m.gguf\"\n[instance.b.server]\nport = 2\nmodel = \"https://h2/m.gguf\"\n", "", []string{"cfg.toml:6: instance.b.server.model: https://h1/m.gguf and https://h2/m.gguf would both be downloaded to /models/m.gguf"}},
	{"duplicate port", "[instance.a.server]\nport = 8080\n[instance.b.server]\nport = 8080\n", "", []string{`cfg.toml:4: instance.b.server.port: port 8080 is also used by instance "a"`}},
	{"duplicate default port", "[instance.a.server]\nmodel = \"/m/a.gguf\"\n[instance.b.server]\nmodel = \"/m/b.gguf\"\n", "", []string{`cfg.toml:3: instance.b.server.port: port 8080 (no port set: 8080 is the default) is also used by instance "a"`}},
	{"duplicate default port, global server", "[instance.server]\nctx_size = 1\n[instance.a.server]\nmodel = \"/m/a.gguf\"\n\n[instance.b.control]\nbackground = true\n", "", []string{`cfg.toml:6: instance.b.server.port: port 8080 (no port set`}},
	{"duplicate port after overrides", "[instance.a.server]\nport = 8080\n[instance.b.server]\nport = 8081\n", `{"instance":{"b":{"server":{"port":8080}}}}`, []string{`AUTO_INFER_LLAMA_CPP_OVERRIDES: instance.b.server.port: port 8080 is also used by instance "a"`}},
	{"bad instance name", "[instance.\"-bad\".server]\nport = 1\n", "", []string{`cfg.toml:1: instance.-bad: instance name must match`}},
	{"instance not a table", "[instance]\nfoo = 3\n", "", []string{"cfg.toml:2: instance.foo: must be a table"}},
	{"restart policy", "[instance.a.control]\nrestart = \"sometimes\"\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: instance.a.control.restart: must be one of`}},
	{"ready_timeout", "[instance.a.control]\nready_timeout = \"soon\"\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: instance.a.control.ready_timeout: must be a duration`}},
	{"liveness_interval", "[instance.control]\nliveness_interval = \"-1s\"\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: instance.control.liveness_interval: must be a duration`}},
	{"liveness_timeout", "[instance.a.control]\nliveness_timeout = true\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: instance.a.control.liveness_timeout: must be a duration such as "90s" or "10m", or a number of seconds, not a boolean true`}},
	{"liveness_failures", "[instance.a.control]\nliveness_failures = -1\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: instance.a.control.liveness_failures: must be an integer ≥ 0 (0 turns the hang watchdog off), not an integer -1`}},
	{"liveness_failures float", "[instance.a.control]\nliveness_failures = 2.5\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: instance.a.control.liveness_failures: must be an integer ≥ 0`}},
	{"drain_timeout", "[instance.a.control]\ndrain_timeout = \"5 s\"\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: instance.a.control.drain_timeout: must be a duration`}},
	{"metrics_proxy", "[instance.a.control]\nmetrics_proxy = \"yes\"\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: instance.a.control.metrics_proxy: must be true or false, not the string "yes"`}},
	{"watchdog key typo", "[instance.a.control]\nliveness_failure = 3\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: instance.a.control.liveness_failure: unknown key in [instance.a.control] (did you mean "liveness_failures"?)`}},
	{"list of bools", "[instance.a.server]\nport=1\nlora = [true]\n", "", []string{"cfg.toml:3: instance.a.server.lora: item 1 must be a string or a number"}},
	{"date value", "[instance.a.server]\nport=1\nwhen = 2024-01-01\n", "", []string{"cfg.toml:3: instance.a.server.when:", "cannot be passed to llama-server"}},
	{"router listen missing", "[router]\nmax_queue = 1\n[instance.a.server]\nport=1\n", "", []string{"cfg.toml:1: router.listen: missing"}},
	{"router listen form", "[router]\nlisten = \"8000\"\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:2: router.listen: must be "HOST:PORT"`, `not the string "8000"`}},
	{"router unknown key", "[router]\nlisten = \"127.0.0.1:8000\"\nmax_waits = \"1m\"\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:3: router.max_waits: unknown key in [router] (did you mean "max_wait"?)`}},
	{"router max_queue", "[router]\nlisten = \"127.0.0.1:8000\"\nmax_queue = -1\n[instance.a.server]\nport=1\n", "", []string{"cfg.toml:3: router.max_queue: must be an integer from 0 to 1048576"}},
	{"router max_wait", "[router]\nlisten = \"127.0.0.1:8000\"\nmax_wait = \"soon\"\n[instance.a.server]\nport=1\n", "", []string{"cfg.toml:3: router.max_wait: must be a duration"}},
	{"router max_wait zero", "[router]\nlisten = \"127.0.0.1:8000\"\nmax_wait = 0\n[instance.a.server]\nport=1\n", "", []string{"cfg.toml:3: router.max_wait: must be more than 0"}},
	{"router group max_loaded", "[router]\nlisten = \"127.0.0.1:8000\"\n[router.group.g]\nmax_loaded = 0\n[instance.a.server]\nport=1\n", "", []string{"cfg.toml:4: router.group.g.max_loaded: must be an integer ≥ 1, not an integer 0"}},
	{"router group max_loaded missing", "[router]\nlisten = \"127.0.0.1:8000\"\n[router.group.g]\n[instance.a.server]\nport=1\n", "", []string{"cfg.toml:3: router.group.g.max_loaded: missing"}},
	{"router group key", "[router]\nlisten = \"127.0.0.1:8000\"\n[router.group.g]\nmax_loaded = 1\nmaxloaded = 2\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:5: router.group.g.maxloaded: unknown key in [router.group.g] (did you mean "max_loaded"?)`}},
	{"on_demand bool", "[router]\nlisten = \"127.0.0.1:8000\"\n[instance.a.control]\non_demand = \"yes\"\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:4: instance.a.control.on_demand: must be true or false, not the string "yes"`}},
	{"aliases list", "[router]\nlisten = \"127.0.0.1:8000\"\n[instance.a.control]\naliases = \"gpt\"\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:4: instance.a.control.aliases: must be a list of names`}},
	{"aliases item", "[router]\nlisten = \"127.0.0.1:8000\"\n[instance.a.control]\naliases = [\"gpt 4\"]\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:4: instance.a.control.aliases: item 1 must be a name without spaces, not the string "gpt 4"`}},
	{"idle_timeout", "[router]\nlisten = \"127.0.0.1:8000\"\n[instance.control]\nidle_timeout = \"a while\"\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:4: instance.control.idle_timeout: must be a duration`}},
	{"group empty", "[router]\nlisten = \"127.0.0.1:8000\"\n[instance.a.control]\ngroup = \"\"\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:4: instance.a.control.group: must not be empty`}},
	{"router keys without a router", "[instance.a.control]\non_demand = true\nidle_timeout = \"5m\"\n[instance.a.server]\nport=1\n", "", []string{"cfg.toml:2: instance.a.control.on_demand: applies only with a [router] table", "cfg.toml:3: instance.a.control.idle_timeout: applies only"}},
	{"unknown group", "[router]\nlisten = \"127.0.0.1:8000\"\n[router.group.big]\nmax_loaded = 1\n[instance.a.control]\ngroup = \"bigg\"\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:6: instance.a.control.group: "bigg" names no [router.group.bigg] table (did you mean "big"?)`}},
	{"alias taken", "[router]\nlisten = \"127.0.0.1:8000\"\n[instance.a.server]\nport=1\n[instance.b.control]\naliases = [\"x\", \"a\"]\n[instance.b.server]\nport=2\n[instance.c.control]\naliases = [\"x\"]\n[instance.c.server]\nport=3\n", "", []string{`cfg.toml:6: instance.b.control.aliases: "a" is an instance's name`, `cfg.toml:10: instance.c.control.aliases: "x" is an alias of instance "b"`}},
	{"router on an instance's port", "[router]\nlisten = \":8080\"\n[instance.a.server]\nport=8080\n", "", []string{`cfg.toml:2: router.listen: port 8080 is also instance "a"'s port`}},
	{"on_demand in router mode", "[router]\nlisten = \"127.0.0.1:8000\"\n[instance.a.control]\non_demand = true\n[instance.a.server]\nport=1\nmodels_dir = \"/m\"\n", "", []string{`cfg.toml:4: instance.a.control.on_demand: an instance in llama.cpp's router mode (models_dir)`}},
	{"group over its size at boot", "[router]\nlisten = \"127.0.0.1:8000\"\n[router.group.g]\nmax_loaded = 1\n[instance.control]\ngroup = \"g\"\n[instance.a.server]\nport=1\n[instance.b.server]\nport=2\n[instance.c.control]\non_demand = true\n[instance.c.server]\nport=3\n", "", []string{`cfg.toml:4: router.group.g.max_loaded: 2 of the group's instances start at boot (a, b) but at most 1 may run at once`}},
	{"api_keys_file missing", "[router]\nlisten = \"127.0.0.1:8000\"\napi_keys_file = \"/nonexistent/keys\"\n[instance.a.server]\nport=1\n", "", []string{`cfg.toml:3: router.api_keys_file: cannot read /nonexistent/keys`}},
	{"missing instance", "[master]\nenable = true\n", "", []string{"instance: missing"}},
	{"duplicate key", "[instance.a.server]\nport = 1\nport = 2\n", "", []string{"cfg.toml:3:", "TOML syntax error"}},
}

// schemaBlind are rules a JSON Schema cannot state (or cases that never
// reach it).
var schemaBlind = map[string]bool{
	"syntax": true, "duplicate key": true, "date value": true,
	"duplicate port": true, "duplicate default port": true, "duplicate default port, global server": true, "duplicate port after overrides": true,
	"model reference unknown": true, "model url not the first part": true, "model_sha256 without a URL": true, "split pins count": true, "two URLs one file": true,
	"router max_wait zero": true, "router keys without a router": true, "unknown group": true, "alias taken": true,
	"router on an instance's port": true, "on_demand in router mode": true, "api_keys_file missing": true, "group over its size at boot": true,
}

func TestValidationRules(t *testing.T) {
	for _, c := range validationCases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("cfg.toml", []byte(c.toml), Options{AppDir: t.TempDir(), ModelsDir: "/models", Overrides: c.overrides})
			if err == nil {
				t.Fatal("accepted")
			}
			var bad interface{ BadInput() bool }
			if !errors.As(err, &bad) {
				t.Errorf("error is not bad input: %T", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestAllProblemsAtOnce(t *testing.T) {
	_, err := Parse("cfg.toml", []byte("[instance.a.control]\ngpu_id = \"0\"\n[instance.a.server]\nport = 0\nflash_attn = true\n"), Options{AppDir: t.TempDir()})
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 3 {
		t.Fatalf("want 3 problems listed together, got %v", err)
	}
}

func TestOverridesErrors(t *testing.T) {
	for _, ov := range []string{`{"instance":`, `[1,2]`, `{"a":1} x`, `{"instance":{"a":{"server":{"port":null}}}}`} {
		_, err := Parse("cfg.toml", []byte("[instance.a.server]\nport = 1\n"), Options{Overrides: ov, AppDir: t.TempDir()})
		var oe *OverridesError
		if !errors.As(err, &oe) || !strings.Contains(err.Error(), "AUTO_INFER_LLAMA_CPP_OVERRIDES is not a valid JSON object") {
			t.Errorf("overrides %q: want an overrides error, got %v", ov, err)
		}
	}
}

func TestWarningsAndModels(t *testing.T) {
	plan, err := Parse("cfg.toml", []byte("[instance.a.server]\nport = 1\nmodel = \"/m/x-00002-of-00003.gguf\"\n"), Options{AppDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Warnings) != 1 || !strings.Contains(plan.Warnings[0].String(), "cfg.toml:3: instance.a.server.model: \"/m/x-00002-of-00003.gguf\" is not the first shard") {
		t.Errorf("warnings = %v", plan.Warnings)
	}
	missing := plan.MissingModels(func(string) bool { return false })
	if len(missing) != 1 || !strings.Contains(missing[0].String(), `cfg.toml:3: instance.a.server.model: model file /m/x-00002-of-00003.gguf does not exist (instance "a")`) {
		t.Errorf("missing = %v", missing)
	}
}

func TestExecutableResolution(t *testing.T) {
	cfg := []byte("[instance.a.server]\nport = 1\n")
	exists := func(set ...string) func(string) bool {
		return func(p string) bool {
			for _, s := range set {
				if s == p {
					return true
				}
			}
			return false
		}
	}
	for _, c := range []struct {
		cfg    string
		exists []string
		want   string
		libDir string
	}{
		{"", nil, "llama-server", ""},
		{"", []string{"/app/llama-cpp/bin/llama-server", "/hard/volume/workspace/llama-cpp/build/bin/llama-server"}, "/app/llama-cpp/bin/llama-server", "/app/llama-cpp/bin"},
		{"", []string{"/hard/volume/workspace/llama-cpp/build/bin/llama-server"}, "/hard/volume/workspace/llama-cpp/build/bin/llama-server", "/hard/volume/workspace/llama-cpp/build/bin"},
		{"[master]\nllama_cpp_path = \"/x/llama-server\"\n", []string{"/app/llama-cpp/bin/llama-server"}, "/x/llama-server", "/x"},
	} {
		plan, err := Parse("cfg.toml", append([]byte(c.cfg), cfg...), Options{AppDir: "/app", Exists: exists(c.exists...)})
		if err != nil {
			t.Fatal(err)
		}
		if in := plan.Instances[0]; in.Executable != c.want || in.LibDir != c.libDir {
			t.Errorf("executable = %q (lib %q), want %q (lib %q)", in.Executable, in.LibDir, c.want, c.libDir)
		}
	}
}

func TestPortDefaultAndURL(t *testing.T) {
	plan, err := Parse("cfg.toml", []byte("[instance.a.server]\nhost = \"0.0.0.0\"\nmodel = \"/m.gguf\"\n"), Options{AppDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	in := plan.Instances[0]
	if got := strings.Join(in.Cmd, " "); got != "--host 0.0.0.0 --model /m.gguf --port 8080" {
		t.Errorf("cmd = %q: want --port 8080 added when no port is configured", got)
	}
	if in.URL != "http://0.0.0.0:8080" || in.ProbeURL() != "http://127.0.0.1:8080" {
		t.Errorf("url %q probe %q", in.URL, in.ProbeURL())
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("[instance.a.server]\nport = 1\n"), "")
	f.Add([]byte("[master]\nenable=true\n[instance.control]\ngpu_ids=\"0\"\n[instance.x.server]\nlora=[\"a\",1.5]\n"), `{"instance":{"x":{"server":{"port":2}}}}`)
	f.Fuzz(func(t *testing.T, data []byte, ov string) {
		plan, err := Parse("fuzz.toml", data, Options{AppDir: "/nonexistent", Overrides: ov})
		if err != nil {
			var bad interface{ BadInput() bool }
			if !errors.As(err, &bad) {
				t.Fatalf("error is not bad input: %v", err)
			}
			return
		}
		seen := map[int]bool{}
		for _, in := range plan.Instances {
			if in.Port < 1 || in.Port > 65535 || seen[in.Port] {
				t.Fatalf("plan passed validation with port %d", in.Port)
			}
			seen[in.Port] = true
		}
	})
}

func TestWatchdogKeys(t *testing.T) {
	cfg := "[instance.control]\nliveness_interval = \"2s\"\ndrain_timeout = 0\n" +
		"[instance.a.server]\nport = 1\nmetrics = true\n" +
		"[instance.b.control]\nliveness_failures = 0\nliveness_timeout = 1.5\nmetrics_proxy = true\n[instance.b.server]\nport = 2\n"
	plan, err := Parse("cfg.toml", []byte(cfg), Options{AppDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	a, b := plan.Instances[0], plan.Instances[1]
	if a.LivenessInterval != 2*time.Second || a.LivenessTimeout != DefaultLivenessTimeout || a.LivenessFailures != DefaultLivenessFailures ||
		a.DrainTimeout != 0 || a.MetricsProxy || !a.Watched() {
		t.Errorf("a: %+v", a)
	}
	if b.LivenessFailures != 0 || b.LivenessTimeout != 1500*time.Millisecond || !b.MetricsProxy || b.Watched() {
		t.Errorf("b: %+v (liveness_failures = 0 turns the watchdog off)", b)
	}
	// metrics_proxy without llama-server's --metrics has nothing to proxy.
	if len(plan.Warnings) != 1 || !strings.Contains(plan.Warnings[0].String(), "cfg.toml:10: instance.b.control.metrics_proxy: llama-server serves /metrics only with metrics = true") {
		t.Errorf("warnings = %v", plan.Warnings)
	}
	// JSON (plan --json, instances handed to a supervisor) carries seconds.
	raw, _ := json.Marshal(a)
	var back Instance
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	back.DurationsFromJSON()
	if back.LivenessInterval != a.LivenessInterval || back.LivenessTimeout != a.LivenessTimeout || back.DrainTimeout != 0 ||
		back.ReadyTimeout != a.ReadyTimeout || back.StopTimeout != a.StopTimeout || back.LivenessFailures != a.LivenessFailures {
		t.Errorf("through JSON: %+v, want %+v", back, a)
	}
}
