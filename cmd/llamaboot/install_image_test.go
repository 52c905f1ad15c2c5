package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
	"github.com/llamaboot/llamaboot/internal/imagegen"
)

// TestInstallImageCommand installs the stand-in server from an image in a
// loopback registry, as `install SOURCE` and as the boot variable, from a
// directory other than /app, and checks the exit statuses of bad input.
func TestInstallImageCommand(t *testing.T) {
	server, err := os.ReadFile(standin)
	if err != nil {
		t.Fatal(err)
	}
	base, err := imagegen.NewLayer(archive.Gzip, []bundlegen.Entry{bundlegen.Dir("etc/"), bundlegen.File("etc/os-release", 0o644, "x")})
	if err != nil {
		t.Fatal(err)
	}
	top, err := imagegen.NewLayer(archive.Zstd, []bundlegen.Entry{bundlegen.Dir("opt/llama/"), {Name: "opt/llama/llama-server", Type: '0', Mode: 0o755, Body: server}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := imagegen.Image("linux/"+runtime.GOARCH, map[string]string{"org.opencontainers.image.version": "b7002"}, base, top)
	if err != nil {
		t.Fatal(err)
	}
	srv := imagegen.Registry()
	defer srv.Close()
	ref := "docker://" + strings.TrimPrefix(srv.URL, "http://") + "/llama.cpp:server-b7002"
	if err := imagegen.Push(strings.TrimPrefix(ref, "docker://"), img); err != nil {
		t.Fatal(err)
	}
	app := filepath.Join(t.TempDir(), "app")
	env := []string{"AUTO_INFER_APP_DIR=" + app, "DOCKER_CONFIG=" + t.TempDir()}

	r := runLB(t, env, "install", ref)
	if r.code != 2 || !strings.Contains(r.stderr, "holds no /app; its top level holds: /etc, /opt") {
		t.Fatalf("image without /app: %v", r)
	}
	r = runLB(t, append(env, "AUTO_INFER_LLAMA_CPP_IMAGE_PATH=/opt/llama"), "install", ref)
	if r.code != 0 || !strings.Contains(r.stdout, "activated b7002-") {
		t.Fatal(r)
	}
	if out, err := exec.Command(filepath.Join(app, "llama-cpp", "bin", "llama-server"), "--host", "256.0.0.1").CombinedOutput(); !strings.Contains(string(out), "STANDIN_ARGV") {
		t.Errorf("installed llama-server does not run: %v\n%s", err, out)
	}
	r = runLB(t, append(env, "AUTO_INFER_LLAMA_CPP_IMAGE_PATH=/opt/llama", "AUTO_INFER_LLAMA_CPP_WITH_LIBS=1"), "install", "--force", ref)
	if r.code != 0 || !strings.Contains(r.stdout, "--with-libs: every library the bundle needs is found in this container; none copied") {
		t.Fatal(r)
	}
	// The boot path: the same reference in the package variable, registry gone.
	srv.Close()
	r = runLB(t, append(env, "AUTO_INFER_LLAMA_CPP_PKG_PATH="+ref), "install", "--image-path", "/opt/llama")
	if r.code != 0 || !strings.Contains(r.stdout, "already installed") {
		t.Fatal(r)
	}
	r = runLB(t, env, "install", "containers-storage:llama:b1")
	if r.code != 2 || !strings.Contains(r.stderr, `unknown transport "containers-storage"`) || !strings.Contains(r.stderr, "docker://REGISTRY/REPO:TAG") {
		t.Fatal(r)
	}
}

// TestInstallLocalImageBuildFromTag installs images with no version label
// from a `docker save` archive and an OCI archive: the build is read from
// the tag the archive records (RepoTags, the ref.name annotation), as the
// README promises, so the bundle is named b9597-… rather than bundle-….
func TestInstallLocalImageBuildFromTag(t *testing.T) {
	server, err := os.ReadFile(standin)
	if err != nil {
		t.Fatal(err)
	}
	top, err := imagegen.NewLayer(archive.Tar, []bundlegen.Entry{bundlegen.Dir("app/"), {Name: "app/llama-server", Type: '0', Mode: 0o755, Body: server}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := imagegen.Image("linux/"+runtime.GOARCH, nil, top)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	saved := filepath.Join(dir, "llama.tar")
	if err := imagegen.WriteDockerArchive(saved, "ghcr.io/ggml-org/llama.cpp:server-cuda-b9597", img); err != nil {
		t.Fatal(err)
	}
	if err := imagegen.WriteLayout(filepath.Join(dir, "layout"), img, "server-b9598"); err != nil {
		t.Fatal(err)
	}
	ociTar := filepath.Join(dir, "llama-oci.tar")
	if err := imagegen.TarDir(filepath.Join(dir, "layout"), ociTar); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ src, build string }{
		{"docker-archive:" + saved, "b9597"},
		{"docker-archive:" + saved + ":ghcr.io/ggml-org/llama.cpp:server-cuda-b9597", "b9597"},
		{"oci-archive:" + ociTar, "b9598"},
		{"oci:" + filepath.Join(dir, "layout"), "b9598"},
	} {
		app := filepath.Join(t.TempDir(), "app")
		r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "install", c.src)
		if r.code != 0 || !strings.Contains(r.stdout, "activated "+c.build+"-") || !strings.Contains(r.stdout, "build "+c.build) {
			t.Errorf("%s: want build %s: %v", c.src, c.build, r)
		}
	}
}
