package archive_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
)

func TestDetect(t *testing.T) {
	for _, f := range []archive.Format{archive.Tar, archive.Gzip, archive.Zstd, archive.Xz, archive.Zip} {
		var buf bytes.Buffer
		if err := bundlegen.Write(&buf, f, bundlegen.Release("b1", []byte("x"))); err != nil {
			t.Fatal(err)
		}
		head := buf.Bytes()[:min(archive.PeekSize, buf.Len())]
		if got := archive.Detect(head); got != f {
			t.Errorf("Detect(%s bytes) = %s", f, got)
		}
	}
	for _, junk := range []string{"", "hello world", strings.Repeat("\x00", 600)} {
		if got := archive.Detect([]byte(junk)); got != archive.Unknown {
			t.Errorf("Detect(%q) = %s, want unknown", junk, got)
		}
	}
	names := map[string]archive.Format{"a.tgz": archive.Gzip, "A.TAR.GZ": archive.Gzip, "a.tar.zst": archive.Zstd,
		"a.tar.xz": archive.Xz, "a.zip": archive.Zip, "a.tar": archive.Tar, "a.bin": archive.Unknown}
	for n, want := range names {
		if got := archive.FormatFromName(n); got != want {
			t.Errorf("FormatFromName(%q) = %s, want %s", n, got, want)
		}
	}
}

// FuzzExtract feeds arbitrary bytes to the extractor: it must never panic,
// never write outside its root, and refuse with an *archive.Error or succeed.
func FuzzExtract(f *testing.F) {
	for _, fm := range []archive.Format{archive.Tar, archive.Gzip, archive.Zip} {
		for _, es := range [][]bundlegen.Entry{
			bundlegen.Release("b1", []byte("srv")),
			{bundlegen.File("../escape", 0o644, "x")},
			{bundlegen.Symlink("a", "../../etc"), bundlegen.File("a/passwd", 0o644, "x")},
			{bundlegen.Symlink("d", "."), bundlegen.File("d/d/x", 0o644, "x")},
		} {
			var buf bytes.Buffer
			if err := bundlegen.Write(&buf, fm, es); err == nil {
				f.Add(buf.Bytes())
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		dst := filepath.Join(parent, "root")
		os.Mkdir(dst, 0o755)
		// A victim beside the root: whatever the archive holds, it keeps
		// its content and mode.
		victim := filepath.Join(parent, "victim")
		if err := os.WriteFile(victim, []byte("victim"), 0o600); err != nil {
			t.Fatal(err)
		}
		root, err := os.OpenRoot(dst)
		if err != nil {
			t.Fatal(err)
		}
		defer root.Close()
		lim := archive.Limits{MaxEntries: 1000, MaxBytes: 1 << 20}
		format := archive.Detect(data[:min(len(data), archive.PeekSize)])
		if format == archive.Zip {
			_, err = archive.ExtractZip(bytes.NewReader(data), int64(len(data)), root, lim)
		} else {
			_, err = archive.Extract(bytes.NewReader(data), format, root, lim)
		}
		var ae *archive.Error
		if err != nil && !errors.As(err, &ae) {
			t.Fatalf("error is not an *archive.Error: %T %v", err, err)
		}
		entries, _ := os.ReadDir(parent)
		if len(entries) != 2 {
			t.Fatalf("extraction wrote beside its root: %v", entries)
		}
		if b, err := os.ReadFile(victim); err != nil || string(b) != "victim" {
			t.Fatalf("the file beside the root changed: %q %v", b, err)
		}
		if st, err := os.Lstat(victim); err != nil || st.Mode() != 0o600 {
			t.Fatalf("the file beside the root: %v %v", st.Mode(), err)
		}
		// What was extracted, on success, holds no link that leads out
		// of the root or loops: the audit the install runs agrees.
		if err == nil {
			if aerr := archive.Audit(root, lim); aerr != nil {
				t.Fatalf("extracted, but the tree fails the audit: %v", aerr)
			}
			_ = filepath.WalkDir(dst, func(p string, d os.DirEntry, _ error) error {
				if d == nil || d.Type()&os.ModeSymlink == 0 {
					return nil
				}
				if real, err := filepath.EvalSymlinks(p); err == nil && real != dst && !strings.HasPrefix(real, dst+"/") {
					t.Fatalf("link %s leads out of the root to %s", p, real)
				}
				return nil
			})
		}
	})
}

// TestGzipTrailerCheckedPastPadding: the gzip CRC sits after whatever follows
// the tar end marker; padding must not be a way to skip checking it, nor a
// way to make the extractor read without bound.
func TestGzipTrailerCheckedPastPadding(t *testing.T) {
	var tarBuf bytes.Buffer
	if err := bundlegen.Write(&tarBuf, archive.Tar, []bundlegen.Entry{bundlegen.File("bin/llama-server", 0o755, "srv")}); err != nil {
		t.Fatal(err)
	}
	padded := append(tarBuf.Bytes(), make([]byte, 17<<20)...)
	var gz bytes.Buffer
	bundlegen.WriteGzip(&gz, padded)
	data := gz.Bytes()
	data[len(data)-8] ^= 0xff // CRC-32 of the trailer

	extract := func(data []byte, lim archive.Limits) error {
		dst := t.TempDir()
		root, err := os.OpenRoot(dst)
		if err != nil {
			t.Fatal(err)
		}
		defer root.Close()
		_, err = archive.Extract(bytes.NewReader(data), archive.Gzip, root, lim)
		return err
	}
	var ae *archive.Error
	if err := extract(data, archive.Limits{}); !errors.As(err, &ae) || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("bad CRC after 17 MiB of padding: %v", err)
	}
	if err := extract(data, archive.Limits{MaxBytes: 1 << 20}); !errors.As(err, &ae) || !strings.Contains(err.Error(), "expands past") {
		t.Errorf("padding past --max-bytes: %v", err)
	}
	data[len(data)-8] ^= 0xff
	if err := extract(data, archive.Limits{}); err != nil {
		t.Errorf("intact archive with padding refused: %v", err)
	}
}
