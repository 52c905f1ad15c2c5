package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
