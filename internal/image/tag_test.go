package image_test

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
	"github.com/llamaboot/llamaboot/internal/image"
	"github.com/llamaboot/llamaboot/internal/imagegen"
)

// TestLocalImageTag reads the tag a local archive or layout records for
// the image a reference picks: the one named, the only one, none when
// the archive holds several or the layout names none.
func TestLocalImageTag(t *testing.T) {
	dir := t.TempDir()
	a, b := mk(t, "a"), mk(t, "b")
	multi := filepath.Join(dir, "multi.tar")
	if err := imagegen.WriteDockerArchiveOf(multi, map[string]v1.Image{"localhost:5000/llama:server-b1001": a, "llama:server-cuda-b1002": b}); err != nil {
		t.Fatal(err)
	}
	one := filepath.Join(dir, "one.tar")
	if err := imagegen.WriteDockerArchive(one, "localhost:5000/llama:server-b1003", a); err != nil {
		t.Fatal(err)
	}
	if err := imagegen.WriteLayout(filepath.Join(dir, "named"), a, "ghcr.io/ggml-org/llama.cpp:server-b1004"); err != nil {
		t.Fatal(err)
	}
	if err := imagegen.WriteLayout(filepath.Join(dir, "bare"), a, ""); err != nil {
		t.Fatal(err)
	}
	for src, want := range map[string]string{
		"docker-archive:" + multi + ":localhost:5000/llama:server-b1001": "server-b1001",
		"docker-archive:" + multi + ":llama:server-cuda-b1002":           "server-cuda-b1002",
		"docker-archive:" + one:              "server-b1003",
		"oci:" + filepath.Join(dir, "named"): "server-b1004",
		"oci:" + filepath.Join(dir, "bare"):  "",
	} {
		ref, err := image.Parse(src)
		if err != nil {
			t.Fatal(err)
		}
		im, err := image.Open(context.Background(), ref, image.Options{})
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if got := im.Tag(); got != want {
			t.Errorf("%s: tag %q, want %q", src, got, want)
		}
		im.Close()
	}
}

func mk(t *testing.T, body string) v1.Image {
	t.Helper()
	l, err := imagegen.NewLayer(archive.Tar, []bundlegen.Entry{bundlegen.File("app/llama-server", 0o755, body)})
	if err != nil {
		t.Fatal(err)
	}
	i, err := imagegen.Image("linux/"+runtime.GOARCH, nil, l)
	if err != nil {
		t.Fatal(err)
	}
	return i
}
