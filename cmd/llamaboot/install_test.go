package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
)

// releaseArchive packs the stand-in server as a llama.cpp release bundle.
func releaseArchive(t *testing.T, dir, name, tag string) string {
	t.Helper()
	server, err := os.ReadFile(standin)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := bundlegen.Write(&buf, archive.Gzip, bundlegen.Release(tag, server)); err != nil {
		t.Fatal(err)
	}
	return writeFile(t, filepath.Join(dir, name), buf.String())
}

func TestInstallCommand(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	pkg := releaseArchive(t, dir, "llama-b7001-bin-ubuntu-x64.tar.gz", "b7001")
	env := []string{"AUTO_INFER_APP_DIR=" + app, "AUTO_INFER_LLAMA_CPP_PKG_PATH=" + pkg}

	r := runLB(t, env, "install")
	if r.code != 0 || !strings.Contains(r.stdout, "[llama-cpp-pkg] installing llama-b7001-bin-ubuntu-x64.tar.gz") ||
		!strings.Contains(r.stdout, "activated b7001-") {
		t.Fatal(r)
	}
	server := filepath.Join(app, "llama-cpp", "bin", "llama-server")
	if out, err := exec.Command(server, "--host", "256.0.0.1").CombinedOutput(); !strings.Contains(string(out), "STANDIN_ARGV") {
		t.Errorf("installed llama-server does not run: %v\n%s", err, out)
	}
	var marker map[string]any
	b, _ := os.ReadFile(filepath.Join(app, "llama-cpp", ".installed-from.json"))
	json.Unmarshal(b, &marker)
	for _, k := range []string{"archive_name", "sha256", "installed_at_unix", "source_path", "size", "layout", "build_tag"} {
		if _, ok := marker[k]; !ok {
			t.Errorf("marker lacks %s: %s", k, b)
		}
	}
	if marker["build_tag"] != "b7001" || marker["layout"] != "release" {
		t.Errorf("marker: %s", b)
	}
	for _, n := range []string{"check-and-run-llama-cpp.sh", "install-llama-cpp-pkg.sh", "get-llama-cpp-pkg.sh"} {
		if target, _ := os.Readlink(filepath.Join(app, "llama-cpp", n)); target != llamaboot {
			t.Errorf("%s -> %q", n, target)
		}
	}

	// Second run: one line, nothing done.
	start := time.Now()
	r = runLB(t, env, "install")
	if r.code != 0 || strings.Count(r.stdout, "\n") != 1 || !strings.Contains(r.stdout, "nothing to do") {
		t.Errorf("second install: %v", r)
	}
	t.Logf("warm install took %s (process start included)", time.Since(start))
	if r := runLB(t, env, "install", "-q"); r.code != 0 || r.stdout != "" {
		t.Errorf("-q should print nothing: %v", r)
	}

	// The old helper name acts as install.
	cmd := exec.Command(filepath.Join(app, "llama-cpp", "install-llama-cpp-pkg.sh"))
	cmd.Env = cleanEnv(env...)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "nothing to do") {
		t.Errorf("install-llama-cpp-pkg.sh: %v\n%s", err, out)
	}

	// status shows the bundle.
	r = runLB(t, env, "status", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `"build_tag": "b7001"`) || !strings.Contains(r.stdout, `"supervisor": null`) {
		t.Errorf("status: %v", r)
	}
}

func TestInstallCommandErrors(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	good := releaseArchive(t, dir, "good.tar.gz", "b1")
	junk := writeFile(t, filepath.Join(dir, "junk.tar.gz"), "not an archive")
	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no source", []string{"install"}, 2, "no package given"},
		{"missing", []string{"install", filepath.Join(dir, "missing.tgz")}, 2, "missing.tgz cannot be read"},
		{"junk", []string{"install", junk}, 2, "not a supported archive"},
		{"checksum", []string{"install", "--sha256", strings.Repeat("0", 64), good}, 2, "checksum mismatch"},
		{"bad flag", []string{"install", "--no-such-flag"}, 2, "unknown flag"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, c.args...)
			if r.code != c.code || !strings.Contains(r.stderr, c.want) {
				t.Errorf("want exit %d and %q, got %v", c.code, c.want, r)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(app, "llama-cpp", "bin")); err == nil {
		t.Error("a refused install left a bundle behind")
	}
}

func TestEntryInstallsOnBoot(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	pkg := releaseArchive(t, dir, "llama-b7002.tar.gz", "b7002")
	env := []string{"AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT=True", "AUTO_INFER_LLAMA_CPP_PKG_PATH=" + pkg}
	e := startEntry(t, app, env, "--", "true")
	if code := e.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, e.out.String())
	}
	if _, err := os.Stat(filepath.Join(app, "llama-cpp", "bin", "llama-server")); err != nil {
		t.Fatalf("not installed:\n%s", e.out.String())
	}
	// Second boot: no copy, no extraction.
	e = startEntry(t, app, env, "--", "true")
	e.wait(t, 20*time.Second)
	if !strings.Contains(e.out.String(), "nothing to do") || strings.Contains(e.out.String(), "extracted") {
		t.Errorf("second boot should skip the install:\n%s", e.out.String())
	}

	// A corrupt package: the boot goes on with the old bundle; STRICT makes it fatal.
	bad := writeFile(t, filepath.Join(dir, "bad.tar.gz"), "\x1f\x8bgarbage")
	badEnv := []string{"AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_PKG_PATH=" + bad}
	e = startEntry(t, app, badEnv, "--", "sh", "-c", "echo command ran")
	if code := e.wait(t, 20*time.Second); code != 0 || !strings.Contains(e.out.String(), "FAILED") || !strings.Contains(e.out.String(), "command ran") {
		t.Errorf("non-strict boot with a bad package: exit %d\n%s", code, e.out.String())
	}
	e = startEntry(t, app, append(badEnv, "AUTO_INFER_LLAMA_CPP_STRICT=1"), "--", "sh", "-c", "echo command ran")
	if code := e.wait(t, 20*time.Second); code != 2 || strings.Contains(e.out.String(), "command ran") {
		t.Errorf("strict boot with a bad package: exit %d, want 2 before the command\n%s", code, e.out.String())
	}
	if _, err := os.Stat(filepath.Join(app, "llama-cpp", "bin", "llama-server")); err != nil {
		t.Error("previous bundle lost")
	}

	// Odd switch values warn and count as off.
	e = startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT=yes", "AUTO_INFER_LLAMA_CPP_PKG_PATH=" + bad}, "--", "true")
	e.wait(t, 20*time.Second)
	if !strings.Contains(e.out.String(), `AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT="yes" is neither`) || strings.Contains(e.out.String(), "FAILED") {
		t.Errorf("yes should warn and skip:\n%s", e.out.String())
	}
	// Switch on without a path: one line.
	e = startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT=1"}, "--", "true")
	e.wait(t, 20*time.Second)
	if !strings.Contains(e.out.String(), "AUTO_INFER_LLAMA_CPP_PKG_PATH is not set") {
		t.Errorf("missing path not reported:\n%s", e.out.String())
	}
}

func TestEntryInvalidConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), "[instance.a.server]\nflash_attn = true\n")
	env := []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg}
	e := startEntry(t, filepath.Join(dir, "app"), env, "--", "true")
	if code := e.wait(t, 10*time.Second); code != 0 || !strings.Contains(e.out.String(), cfg+`:2: instance.a.server.flash_attn`) || !strings.Contains(e.out.String(), "no server was started") {
		t.Errorf("exit %d\n%s", code, e.out.String())
	}
	e = startEntry(t, filepath.Join(dir, "app"), append(env, "AUTO_INFER_LLAMA_CPP_STRICT=1"), "--", "true")
	if code := e.wait(t, 10*time.Second); code != 2 {
		t.Errorf("strict: exit %d, want 2\n%s", code, e.out.String())
	}
	// The config alone starts nothing.
	e = startEntry(t, filepath.Join(dir, "app"), []string{"AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg}, "--", "true")
	if code := e.wait(t, 10*time.Second); code != 0 || strings.Contains(e.out.String(), "flash_attn") {
		t.Errorf("config without ON_BOOT must not be read: exit %d\n%s", code, e.out.String())
	}
}
