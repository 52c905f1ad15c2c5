package install

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
)

// TestDiskFullKeepsOldBundle installs onto a small tmpfs so the second
// bundle runs out of space mid-extraction.
func TestDiskFullKeepsOldBundle(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	os.Mkdir(app, 0o755)
	if err := unix.Mount("tmpfs", app, "tmpfs", 0, "size=6m"); err != nil {
		t.Skipf("mounting a tmpfs needs root (CI runs as root): %v", err)
	}
	defer unix.Unmount(app, unix.MNT_DETACH)

	small := writeArchive(t, dir, "small.tar.gz", archive.Gzip, bundlegen.Release("b1", []byte("small")))
	mustInstall(t, opts(app, small))
	big := bundlegen.Release("b2", []byte("big"))
	big = append(big, bundlegen.Entry{Name: "llama-b2/libggml-cuda.so", Type: '0', Mode: 0o644, Size: 16 << 20})
	src := writeArchive(t, dir, "big.tar.gz", archive.Gzip, big)

	_, err := Install(context.Background(), opts(app, src))
	if err == nil {
		t.Fatal("install onto a full disk succeeded")
	}
	var bad interface{ BadInput() bool }
	if errors.As(err, &bad) {
		t.Errorf("a full disk is not bad input (exit 1, not 2): %v", err)
	}
	if !errors.Is(err, unix.ENOSPC) {
		t.Errorf("error should carry ENOSPC: %v", err)
	}
	if readServer(t, app) != "small" {
		t.Error("old bundle damaged")
	}
	assertNoLeftovers(t, app)
}
