package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llamaboot/llamaboot/internal/archive"
)

const realPkg = "../../shared/fixtures/real-llama/llama-b9596-bin-ubuntu-x64.tar.gz"

// TestDockerArchiveOfTheRealBuild: an image built with the real llama.cpp
// build in /app, saved with `docker save`, installs at boot from the
// docker-archive: file in a container; doctor there (a FROM scratch
// container, no C library) says llama-server will not start, and why.
func TestDockerArchiveOfTheRealBuild(t *testing.T) {
	needDocker(t)
	ctx := t.TempDir()
	f, err := os.Open(realPkg)
	if err != nil {
		t.Fatalf("the real fixture is missing: %v", err)
	}
	defer f.Close()
	os.MkdirAll(filepath.Join(ctx, "x"), 0o755)
	root, _ := os.OpenRoot(filepath.Join(ctx, "x"))
	if _, err := archive.Extract(f, archive.Gzip, root, archive.Limits{}); err != nil {
		t.Fatal(err)
	}
	root.Close()
	server, _ := os.ReadFile(filepath.Join(ctx, "x", "llama-b9596", "llama-server"))
	os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte("FROM scratch\nLABEL org.opencontainers.image.version=b9596\nCOPY x/llama-b9596 /app/\n"), 0o644)
	tag := "llamaboot-e2e:real-" + runID
	if err := build(tag, ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := run("docker", "rmi", tag); err != nil {
			t.Error(err)
		}
	}()
	pkgs := t.TempDir()
	docker(t, "save", "-o", filepath.Join(pkgs, "llama.tar"), tag)
	os.Chmod(filepath.Join(pkgs, "llama.tar"), 0o644)

	c := start(t, "--network", "none", "-v", pkgs+":/pkg:ro",
		"-e", "AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT=1", "-e", "AUTO_INFER_LLAMA_CPP_PKG_PATH=docker-archive:/pkg/llama.tar",
		testImage, "sh", "-c", "md5sum /soft/app/llama-cpp/bin/llama-server; llamaboot doctor; echo doctor-exit=$?")
	if code := exitCode(t, c); code != "0" {
		t.Fatalf("exit %s:\n%s", code, logs(t, c))
	}
	l := logs(t, c)
	for _, want := range []string{"activated b9596-", md5hex(server), "doctor-exit=1",
		"its program interpreter /lib64/ld-linux-x86-64.so.2 (the dynamic loader) is not in this container",
		"needs libc.so.6", "llama-server will not start"} {
		if !strings.Contains(l, want) {
			t.Errorf("container log lacks %q:\n%s", want, l)
		}
	}
}
