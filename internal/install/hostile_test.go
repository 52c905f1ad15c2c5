package install

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
)

// hostile is one archive an attacker (or a broken download) could hand us.
type hostile struct {
	name   string
	format archive.Format
	build  func() []bundlegen.Entry
	mangle func([]byte) []byte // applied to the archive bytes
	limits archive.Limits
	want   string // in the error message
}

// server puts a valid llama-server in the archive too, so only the hostile
// part can be the reason for a refusal.
func withServer(es ...bundlegen.Entry) func() []bundlegen.Entry {
	return func() []bundlegen.Entry {
		return append([]bundlegen.Entry{bundlegen.File("bin/llama-server", 0o755, "evil")}, es...)
	}
}

func hostileCorpus() []hostile {
	tarGz := func(name string, want string, es ...bundlegen.Entry) hostile {
		return hostile{name: name, format: archive.Gzip, build: withServer(es...), want: want}
	}
	zipOf := func(name string, want string, es ...bundlegen.Entry) hostile {
		return hostile{name: name, format: archive.Zip, build: withServer(es...), want: want}
	}
	dev := func(name string, typ byte) bundlegen.Entry {
		return bundlegen.Entry{Name: name, Type: typ, Mode: 0o644}
	}
	hard := func(name, target string) bundlegen.Entry {
		return bundlegen.Entry{Name: name, Type: tar.TypeLink, Mode: 0o644, Link: target}
	}
	valid := func() []bundlegen.Entry { return bundlegen.Release("b1", []byte("evil")) }
	return []hostile{
		tarGz("absolute-name", `"/tmp/llamaboot-pwned": absolute`, bundlegen.File("/tmp/llamaboot-pwned", 0o644, "x")),
		tarGz("dot-dot", `"../pwned": ".."`, bundlegen.File("../pwned", 0o644, "x")),
		tarGz("dot-dot-inside", `"bin/../../pwned"`, bundlegen.File("bin/../../pwned", 0o644, "x")),
		tarGz("symlink-absolute", `"bin/etc": symlink target "/etc"`, bundlegen.Symlink("bin/etc", "/etc")),
		tarGz("symlink-escape", `"up": symlink target "../.."`, bundlegen.Symlink("up", "../..")),
		tarGz("symlink-escape-nested", `"bin/x": symlink target "../../x"`, bundlegen.Symlink("bin/x", "../../x")),
		tarGz("symlink-chain-escape", `"bin/b": symlink target`, bundlegen.Symlink("bin/a", "b"), bundlegen.Symlink("bin/b", "../../..")),
		tarGz("llama-server-symlink-out", `symlink target "/bin/sh"`, bundlegen.Symlink("lib/llama-server", "/bin/sh")),
		tarGz("write-through-symlink", `"bin/llama-server"`, bundlegen.File("bin/llama-server", 0o755, "overwrite")),
		tarGz("hardlink-absolute", `hardlink target "/etc/passwd"`, hard("bin/passwd", "/etc/passwd")),
		tarGz("hardlink-escape", `hardlink target "../outside"`, hard("bin/out", "../outside")),
		tarGz("hardlink-missing", `not an earlier entry`, hard("bin/ghost", "bin/nothing-here")),
		tarGz("char-device", `"dev/null": device`, dev("dev/null", tar.TypeChar)),
		tarGz("block-device", `"dev/sda": device`, dev("dev/sda", tar.TypeBlock)),
		tarGz("fifo", `"bin/pipe": device and fifo`, dev("bin/pipe", tar.TypeFifo)),
		tarGz("file-under-file", `"bin/llama-server/x"`, bundlegen.File("bin/llama-server/x", 0o644, "x")),
		tarGz("duplicate-entry", `"README": duplicate`, bundlegen.File("README", 0o644, "a"), bundlegen.File("README", 0o644, "b")),
		{name: "too-many-entries", format: archive.Gzip, build: valid, limits: archive.Limits{MaxEntries: 3}, want: "more than 3 entries"},
		{name: "too-many-bytes", format: archive.Gzip, build: func() []bundlegen.Entry {
			return append(valid(), bundlegen.Entry{Name: "llama-b1/libbig.so", Type: tar.TypeReg, Mode: 0o644, Size: 4 << 20})
		}, limits: archive.Limits{MaxBytes: 1 << 20}, want: `"llama-b1/libbig.so": expands past`},
		{name: "truncated-gzip", format: archive.Gzip, build: bigRelease, mangle: func(b []byte) []byte { return b[:len(b)/2] }, want: "truncated"},
		{name: "corrupt-gzip", format: archive.Gzip, build: bigRelease, mangle: flipMiddle, want: "corrupt"},
		{name: "truncated-zstd", format: archive.Zstd, build: bigRelease, mangle: func(b []byte) []byte { return b[:len(b)/2] }, want: "truncated"},
		{name: "corrupt-xz", format: archive.Xz, build: bigRelease, mangle: flipMiddle, want: "corrupt"},
		{name: "truncated-tar", format: archive.Tar, build: bigRelease, mangle: func(b []byte) []byte { return b[:2048] }, want: "truncated"},
		{name: "gzip-of-not-tar", format: archive.Unknown, mangle: func([]byte) []byte { return gz([]byte(strings.Repeat("not a tar\n", 100))) }, want: "does not hold a tar archive"},
		{name: "truncated-zip", format: archive.Zip, build: bigRelease, mangle: func(b []byte) []byte { return b[:len(b)-30] }, want: "zip"},
		zipOf("zip-dot-dot", `"../zip-pwned": ".."`, bundlegen.File("../zip-pwned", 0o644, "x")),
		zipOf("zip-absolute", `absolute`, bundlegen.File("/tmp/zip-pwned", 0o644, "x")),
		zipOf("zip-symlink-escape", `symlink target "../../../etc"`, bundlegen.Symlink("bin/etc", "../../../etc")),
		zipOf("zip-fifo", `"bin/fifo"`, bundlegen.Entry{Name: "bin/fifo", Type: tar.TypeFifo, Mode: 0o644}),
		{name: "empty-tar", format: archive.Tar, build: func() []bundlegen.Entry { return []bundlegen.Entry{bundlegen.Dir("llama-b1/")} }, want: "no llama-server"},
		{name: "server-is-a-dir", format: archive.Gzip, build: func() []bundlegen.Entry {
			return []bundlegen.Entry{bundlegen.Dir("bin/llama-server/"), bundlegen.File("bin/llama-server/x", 0o644, "x")}
		}, want: "no llama-server"},
	}
}

func bigRelease() []bundlegen.Entry {
	return append(bundlegen.Release("b1", []byte("evil")), bundlegen.Entry{Name: "llama-b1/libggml-cuda.so", Type: tar.TypeReg, Mode: 0o644, Size: 256 << 10})
}

func flipMiddle(b []byte) []byte {
	c := append([]byte(nil), b...)
	for i := len(c) / 2; i < len(c)/2+16; i++ {
		c[i] ^= 0x5a
	}
	return c
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	bundlegen.WriteGzip(&buf, b)
	return buf.Bytes()
}

func TestHostileArchivesAreRefused(t *testing.T) {
	corpus := hostileCorpus()
	if len(corpus) < 20 {
		t.Fatalf("corpus has %d archives, want at least 20", len(corpus))
	}
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	good := writeArchive(t, dir, "good.tar.gz", archive.Gzip, bundlegen.Release("b1", []byte("good")))
	mustInstall(t, opts(app, good))
	before := listVersions(app)

	for _, h := range corpus {
		t.Run(h.name, func(t *testing.T) {
			src := filepath.Join(dir, h.name+".pkg")
			var buf bytes.Buffer
			if h.build != nil {
				if err := bundlegen.Write(&buf, h.format, h.build()); err != nil {
					t.Fatal(err)
				}
			}
			data := buf.Bytes()
			if h.mangle != nil {
				data = h.mangle(data)
			}
			os.WriteFile(src, data, 0o644)
			o := opts(app, src)
			o.Limits = h.limits
			_, err := Install(context.Background(), o)
			var bad interface{ BadInput() bool }
			if err == nil || !errors.As(err, &bad) {
				t.Fatalf("want a bad-input refusal, got %v", err)
			}
			if !strings.Contains(err.Error(), h.want) {
				t.Errorf("error %q does not say %q", err, h.want)
			}
			if readServer(t, app) != "good" {
				t.Error("installed bundle changed")
			}
			if got := listVersions(app); strings.Join(got, ",") != strings.Join(before, ",") {
				t.Errorf("versions changed: %v -> %v", before, got)
			}
			assertNoLeftovers(t, app)
		})
	}
	for _, p := range []string{"/tmp/llamaboot-pwned", "/tmp/zip-pwned", filepath.Join(dir, "pwned"), filepath.Join(app, "pwned")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s was written outside the staging dir", p)
		}
	}
}

func TestSpecialBitsDropped(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	src := writeArchive(t, dir, "suid.tar", archive.Tar, []bundlegen.Entry{
		{Name: "bin/llama-server", Type: tar.TypeReg, Mode: 0o6755, Body: []byte("s")},
		{Name: "bin/data", Type: tar.TypeReg, Mode: 0o1666, Body: []byte("d")},
		{Name: "bin/private", Type: tar.TypeReg, Mode: 0o600, Body: []byte("p")},
		{Name: "share/", Type: tar.TypeDir, Mode: 0o1777},
	})
	mustInstall(t, opts(app, src))
	checkModes(t, filepath.Join(app, "llama-cpp"))
}
