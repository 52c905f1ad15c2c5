package watch

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// poller runs Poll on path and hands each reported change to the test.
func poller(t *testing.T, path string) <-chan Sum {
	t.Helper()
	initial, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	changes := make(chan Sum, 16)
	go Poll(ctx, path, 5*time.Millisecond, initial, func(s Sum) { changes <- s })
	return changes
}

func expectChange(t *testing.T, changes <-chan Sum, path string) {
	t.Helper()
	want, _ := Read(path)
	select {
	case got := <-changes:
		if got != want {
			t.Fatalf("reported a content that is not the file's")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("change not reported")
	}
}

func expectQuiet(t *testing.T, changes <-chan Sum) {
	t.Helper()
	select {
	case <-changes:
		t.Fatal("a change was reported where the content did not change")
	case <-time.After(100 * time.Millisecond): // 20 polls
	}
}

// TestConfigMapSwap builds the layout the kubelet gives a mounted ConfigMap
// (file -> ..data/file, ..data -> ..<timestamp>) and updates it the way the
// kubelet does: a new timestamped dir, then ..data flipped by rename.
func TestConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "..2026_11_26_1"), 0o755)
	os.WriteFile(filepath.Join(dir, "..2026_11_26_1", "llama.toml"), []byte("port = 1\n"), 0o644)
	os.Symlink("..2026_11_26_1", filepath.Join(dir, "..data"))
	path := filepath.Join(dir, "llama.toml")
	os.Symlink("..data/llama.toml", path)
	changes := poller(t, path)
	expectQuiet(t, changes)

	os.Mkdir(filepath.Join(dir, "..2026_11_26_2"), 0o755)
	os.WriteFile(filepath.Join(dir, "..2026_11_26_2", "llama.toml"), []byte("port = 2\n"), 0o644)
	os.Symlink("..2026_11_26_2", filepath.Join(dir, "..data_tmp"))
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir, "..2026_11_26_1"))
	expectChange(t, changes, path)
	expectQuiet(t, changes)
}

// TestEditorRenameIntoPlace: vim and friends write a new file and rename it
// over the old one; the inode changes, the path does not.
func TestEditorRenameIntoPlace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "llama.toml")
	os.WriteFile(path, []byte("a\n"), 0o644)
	changes := poller(t, path)
	os.WriteFile(path+".swp", []byte("b\n"), 0o644)
	os.Rename(path+".swp", path)
	expectChange(t, changes, path)

	// Same content written again: no reload.
	os.WriteFile(path+".swp", []byte("b\n"), 0o644)
	os.Rename(path+".swp", path)
	expectQuiet(t, changes)
}

// TestDeletedThenRestored: a path that vanishes is not a change (nothing to
// load); the content that comes back is, if it differs.
func TestDeletedThenRestored(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "llama.toml")
	os.WriteFile(path, []byte("a\n"), 0o644)
	changes := poller(t, path)
	os.Remove(path)
	expectQuiet(t, changes)
	// Restored whole, as the README tells writers to (a file written in
	// place may be seen empty on two polls by a loaded machine: a change).
	replace(t, path, "a\n")
	expectQuiet(t, changes)
	replace(t, path, "c\n")
	expectChange(t, changes, path)
}

// replace puts content at path by renaming a complete file into place.
func replace(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path+".new", []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}
