package install

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
)

// TestPlainDirInOverlayLowerLayer mounts a kernel overlayfs whose lower
// layer holds a plain llama-cpp directory, as an image layer does, and
// installs over it.
func TestPlainDirInOverlayLowerLayer(t *testing.T) {
	dir := t.TempDir()
	lower, upper, work, app := filepath.Join(dir, "lower"), filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "app")
	for _, d := range []string{filepath.Join(lower, "llama-cpp", "bin"), upper, work, app} {
		os.MkdirAll(d, 0o755)
	}
	os.WriteFile(filepath.Join(lower, "llama-cpp", "bin", "llama-server"), []byte("baked"), 0o755)
	if err := unix.Mount("overlay", app, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+work); err != nil {
		t.Skipf("mounting overlayfs needs root (CI runs as root): %v", err)
	}
	defer unix.Unmount(app, unix.MNT_DETACH)

	src := writeArchive(t, dir, "new.tar.gz", archive.Gzip, bundlegen.Release("b5", []byte("new")))
	r := mustInstall(t, opts(app, src))
	if readServer(t, app) != "new" {
		t.Fatal("new bundle not active")
	}
	if fi, err := os.Lstat(filepath.Join(app, "llama-cpp")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("llama-cpp is not a symlink: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(app, versionsName, r.Previous, "bin", "llama-server"))
	if err != nil || string(b) != "baked" {
		t.Errorf("baked bundle not kept for rollback: %q %v", b, err)
	}
	// And the next install is a plain symlink switch.
	src2 := writeArchive(t, dir, "newer.tar.gz", archive.Gzip, bundlegen.Release("b6", []byte("newer")))
	mustInstall(t, opts(app, src2))
	if readServer(t, app) != "newer" {
		t.Error("second install on overlayfs failed")
	}
}
