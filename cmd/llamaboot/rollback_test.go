package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// linkTarget is the version <app>/llama-cpp points at.
func linkTarget(t *testing.T, app string) string {
	t.Helper()
	v, err := os.Readlink(filepath.Join(app, "llama-cpp"))
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Base(v)
}

func TestRollbackAndKeptBundles(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	env := []string{"AUTO_INFER_APP_DIR=" + app}
	a := releaseArchive(t, dir, "llama-b1000-bin-ubuntu-x64.tar.gz", "b1000")
	b := releaseArchive(t, dir, "llama-b2000-bin-ubuntu-x64.tar.gz", "b2000")
	c := releaseArchive(t, dir, "llama-b3000-bin-ubuntu-x64.tar.gz", "b3000")

	// Nothing installed, then one bundle: nothing to roll back to (exit 2, naming what is kept).
	if r := runLB(t, env, "rollback"); r.code != 2 || !strings.Contains(r.stderr, "nothing to roll back to") {
		t.Errorf("rollback with nothing installed: %v", r)
	}
	if r := runLB(t, env, "install", a); r.code != 0 {
		t.Fatal(r)
	}
	vA := linkTarget(t, app)
	if r := runLB(t, env, "rollback"); r.code != 2 || !strings.Contains(r.stderr, "keeps only the active bundle "+vA) {
		t.Errorf("rollback with one bundle: %v", r)
	}

	if r := runLB(t, env, "install", b); r.code != 0 {
		t.Fatal(r)
	}
	vB := linkTarget(t, app)
	r := runLB(t, env, "status")
	if !strings.Contains(r.stdout, "active: "+vB+"\n") || !strings.Contains(r.stdout, "previous: "+vA+" (llama-b1000-bin-ubuntu-x64.tar.gz, build b1000") {
		t.Errorf("status should show active %s and previous %s:\n%s", vB, vA, r)
	}
	var js struct {
		Active   string `json:"active_bundle"`
		Previous []struct {
			Version string `json:"version"`
		} `json:"previous_bundles"`
	}
	r = runLB(t, env, "status", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &js); err != nil || js.Active != vB || len(js.Previous) != 1 || js.Previous[0].Version != vA {
		t.Errorf("status --json: %+v (%v)\n%s", js, err, r.stdout)
	}

	// Rollback: atomic switch to A, B kept; a second rollback goes back to B.
	r = runLB(t, env, "rollback")
	if r.code != 0 || linkTarget(t, app) != vA || !strings.Contains(r.stdout, "rolled back to "+vA) {
		t.Fatalf("rollback: %v (active %s)", r, linkTarget(t, app))
	}
	if _, err := os.Stat(filepath.Join(app, "llama-cpp.versions", vB, "bin", "llama-server")); err != nil {
		t.Errorf("rollback removed the bundle it left: %v", err)
	}
	if r := runLB(t, env, "rollback"); r.code != 0 || linkTarget(t, app) != vB {
		t.Fatalf("second rollback: %v", r)
	}

	// Re-installing the kept A reactivates it without extracting.
	r = runLB(t, env, "install", a)
	if r.code != 0 || linkTarget(t, app) != vA || strings.Contains(r.stdout, "extract") || !strings.Contains(r.stdout, "reactivated kept bundle "+vA) {
		t.Errorf("re-install of a kept bundle: %v", r)
	}

	// --keep 2 keeps two previous bundles; the default keeps one.
	if r := runLB(t, env, "install", "--keep", "2", c); r.code != 0 {
		t.Fatal(r)
	}
	vC := linkTarget(t, app)
	if got := versions(t, app); len(got) != 3 {
		t.Errorf("--keep 2: versions %v, want 3", got)
	}
	if r := runLB(t, env, "rollback"); r.code != 0 || linkTarget(t, app) != vA {
		t.Errorf("rollback goes to the most recently active (%s): %v", vA, r)
	}
	if r := runLB(t, env, "install", c); r.code != 0 || linkTarget(t, app) != vC {
		t.Fatal(r)
	}
	if got := versions(t, app); len(got) != 2 || !contains(got, vA) || !contains(got, vC) {
		t.Errorf("default keep: versions %v, want %s and %s", got, vC, vA)
	}
}

func versions(t *testing.T, app string) []string {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(app, "llama-cpp.versions"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// An install (or rollback) under running instances: status marks the ones
// still running the bundle they started with, also once it was removed,
// until they are restarted.
func TestStatusMarksReplacedBundles(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	env := []string{"AUTO_INFER_APP_DIR=" + app}
	a := releaseArchive(t, dir, "llama-b1000-bin-ubuntu-x64.tar.gz", "b1000")
	b := releaseArchive(t, dir, "llama-b2000-bin-ubuntu-x64.tar.gz", "b2000")
	c := releaseArchive(t, dir, "llama-b3000-bin-ubuntu-x64.tar.gz", "b3000")
	if r := runLB(t, env, "install", a); r.code != 0 {
		t.Fatal(r)
	}
	vA := linkTarget(t, app)
	port := freePorts(t, 1)[0]
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[instance.control]\nlog_dir = %q\n[instance.a.server]\nhost = \"127.0.0.1\"\nport = %d\n", filepath.Join(dir, "logs"), port))
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=50"})
	e.waitReady(t, "a")
	if r := runLB(t, env, "status"); strings.Contains(r.stdout, "replaced") {
		t.Errorf("nothing replaced yet:\n%s", r.stdout)
	}

	if r := runLB(t, env, "install", b); r.code != 0 {
		t.Fatal(r)
	}
	vB := linkTarget(t, app)
	want := fmt.Sprintf("a: runs b1000 (%s) (replaced) — llamaboot restart a to use b2000 (%s)\n", vA, vB)
	if r := runLB(t, env, "status"); !strings.Contains(r.stdout, want) {
		t.Errorf("status after a new install: want %q:\n%s", want, r.stdout)
	}
	// b3000 prunes b1000: the process runs a removed executable.
	if r := runLB(t, env, "install", c); r.code != 0 {
		t.Fatal(r)
	}
	vC := linkTarget(t, app)
	var js struct {
		Replaced []struct {
			Instance, Running, Active string
			Deleted                   bool
		} `json:"replaced_bundles"`
	}
	r := runLB(t, env, "status", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &js); err != nil || len(js.Replaced) != 1 || js.Replaced[0].Running != vA || !js.Replaced[0].Deleted || js.Replaced[0].Active != vC {
		t.Errorf("status --json after the old bundle was removed: %+v (%v)\n%s", js, err, r.stdout)
	}
	if r := runLB(t, env, "restart", "a"); r.code != 0 {
		t.Fatal(r)
	}
	if r := runLB(t, env, "status"); strings.Contains(r.stdout, "replaced") {
		t.Errorf("restarted on the active bundle, still marked:\n%s", r.stdout)
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	e.wait(t, 20*time.Second)
}
