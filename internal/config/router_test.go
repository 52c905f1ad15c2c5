package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRouterPlan(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keys"), []byte("# clients\nk1\n\n  k2  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "cfg.toml")
	src := `[router]
listen = "127.0.0.1:8000"
api_keys_file = "keys"
max_wait = "30s"
max_queue = 7
[router.group.gpu]
max_loaded = 1
[instance.control]
idle_timeout = "5m"
[instance.a.control]
aliases = ["gpt-4o-mini", "small"]
on_demand = true
group = "gpu"
[instance.a.server]
port = 1
api_key = "upstream-secret"
[instance.b.control]
idle_timeout = 0
[instance.b.server]
port = 2
models_dir = "/models"
`
	plan, err := Parse(file, []byte(src), Options{AppDir: dir, RouterKeys: "k3, k4"})
	if err != nil {
		t.Fatal(err)
	}
	r := plan.Router
	if r == nil || r.Listen != "127.0.0.1:8000" || r.MaxWait != 30*time.Second || r.MaxQueue != 7 || r.Groups["gpu"] != 1 {
		t.Fatalf("router %+v", r)
	}
	if !slices.Equal(r.Keys, []string{"k1", "k2", "k3", "k4"}) || r.APIKeysFile != filepath.Join(dir, "keys") {
		t.Errorf("keys %q from %s", r.Keys, r.APIKeysFile)
	}
	a, b := plan.Instances[0].Routing, plan.Instances[1].Routing
	if !slices.Equal(a.Aliases, []string{"gpt-4o-mini", "small"}) || !a.OnDemand || a.Group != "gpu" || a.IdleTimeout != 5*time.Minute || a.APIKey != "upstream-secret" || a.RouterMode {
		t.Errorf("a routing %+v", a)
	}
	if b.OnDemand || b.IdleTimeout != 0 || !b.RouterMode || b.Group != "" {
		t.Errorf("b routing %+v", b)
	}
	if got := plan.Instances[0].RoutedNames(); !slices.Equal(got, []string{"a", "gpt-4o-mini", "small"}) {
		t.Errorf("routed names %q", got)
	}
}

func TestRouterDefaultsAndAbsence(t *testing.T) {
	plan, err := Parse("cfg.toml", []byte("[router]\nlisten = \":9000\"\n[instance.a.server]\nport = 1\n"), Options{AppDir: t.TempDir(), RouterKeys: " "})
	if err != nil {
		t.Fatal(err)
	}
	if r := plan.Router; r.MaxWait != DefaultRouterMaxWait || r.MaxQueue != DefaultRouterMaxQueue || len(r.Keys) != 0 {
		t.Errorf("defaults %+v", r)
	}
	plan, err = Parse("cfg.toml", []byte("[instance.a.server]\nport = 1\n"), Options{AppDir: t.TempDir(), RouterKeys: "k"})
	if err != nil || plan.Router != nil {
		t.Errorf("without [router]: %v, %+v", err, plan)
	}
}

func TestRouterKeysFileWithoutKeys(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	os.WriteFile(keys, []byte("# none yet\n\n"), 0o600)
	_, err := Parse("cfg.toml", []byte("[router]\nlisten = \":9000\"\napi_keys_file = \""+keys+"\"\n[instance.a.server]\nport = 1\n"), Options{AppDir: dir})
	if err == nil || !strings.Contains(err.Error(), "cfg.toml:3: router.api_keys_file: "+keys+" holds no key") {
		t.Fatalf("got %v", err)
	}
}
