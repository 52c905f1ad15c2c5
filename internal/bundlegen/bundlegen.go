// Package bundlegen writes llama.cpp-like bundles (official release layout
// or the seed's bin/ layout) in every archive format llamaboot reads. Tests,
// the benchmark and the demo use it; nothing in the product does.
package bundlegen

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/llamaboot/llamaboot/internal/archive"
)

// Entry is one archive member.
type Entry struct {
	Name string
	Type byte // tar.TypeReg, TypeDir, TypeSymlink, TypeLink, TypeChar, TypeFifo…
	Mode int64
	Body []byte // for regular files; or Size bytes from Gen
	Size int64
	Link string
}

// File returns a regular file entry.
func File(name string, mode int64, body string) Entry {
	return Entry{Name: name, Type: tar.TypeReg, Mode: mode, Body: []byte(body)}
}

// Symlink returns a symlink entry.
func Symlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeSymlink, Mode: 0o777, Link: target}
}

// Dir returns a directory entry.
func Dir(name string) Entry { return Entry{Name: name, Type: tar.TypeDir, Mode: 0o755} }

// Release is the layout of llama.cpp's Linux release archives: everything
// flat in llama-<tag>/, with versioned library symlinks. server is the
// content of llama-server (a script or a real binary).
func Release(tag string, server []byte) []Entry {
	d := "llama-" + tag + "/"
	return []Entry{
		Dir(d),
		{Name: d + "llama-server", Type: tar.TypeReg, Mode: 0o755, Body: server},
		File(d+"llama-cli", 0o755, "#!/bin/sh\necho cli\n"),
		File(d+"libllama.so.0.0.7123", 0o644, "ELF libllama"),
		Symlink(d+"libllama.so.0", "libllama.so.0.0.7123"),
		Symlink(d+"libllama.so", "libllama.so.0"),
		File(d+"libggml-base.so", 0o644, "ELF ggml-base"),
		File(d+"LICENSE", 0o644, "MIT\n"),
	}
}

// BinLayout is the seed's layout: top/bin/llama-server (top may be "").
func BinLayout(top string, server []byte) []Entry {
	if top != "" {
		top += "/"
	}
	return []Entry{
		File(top+"README.md", 0o644, "bundle\n"),
		{Name: top + "bin/llama-server", Type: tar.TypeReg, Mode: 0o755, Body: server},
		File(top+"bin/libllama.so", 0o644, "ELF libllama"),
	}
}

// Write writes entries as an archive of format f.
func Write(w io.Writer, f archive.Format, entries []Entry) error {
	if f == archive.Zip {
		return writeZip(w, entries)
	}
	var (
		out   io.Writer = w
		close func() error
	)
	switch f {
	case archive.Tar:
	case archive.Gzip:
		zw, _ := gzip.NewWriterLevel(w, gzip.DefaultCompression)
		out, close = zw, zw.Close
	case archive.Zstd:
		zw, err := zstd.NewWriter(w)
		if err != nil {
			return err
		}
		out, close = zw, zw.Close
	case archive.Xz:
		zw, err := xz.NewWriter(w)
		if err != nil {
			return err
		}
		out, close = zw, zw.Close
	default:
		return fmt.Errorf("bundlegen: cannot write %s", f)
	}
	if err := writeTar(out, entries); err != nil {
		return err
	}
	if close != nil {
		return close()
	}
	return nil
}

func writeTar(w io.Writer, entries []Entry) error {
	tw := tar.NewWriter(w)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, Typeflag: e.Type, Mode: e.Mode, Linkname: e.Link, ModTime: time.Unix(1_700_000_000, 0), Format: tar.FormatPAX}
		var body io.Reader
		if e.Type == tar.TypeReg {
			h.Size = int64(len(e.Body))
			body = bytes.NewReader(e.Body)
			if e.Body == nil && e.Size > 0 {
				h.Size = e.Size
				body = io.LimitReader(MachineCode(int64(len(e.Name))), e.Size)
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if body != nil {
			if _, err := io.Copy(tw, body); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

func writeZip(w io.Writer, entries []Entry) error {
	zw := zip.NewWriter(w)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.Name, Method: zip.Deflate, Modified: time.Unix(1_700_000_000, 0)}
		mode := fs.FileMode(e.Mode) & fs.ModePerm
		var body []byte
		switch e.Type {
		case tar.TypeDir:
			mode |= fs.ModeDir
		case tar.TypeSymlink:
			mode |= fs.ModeSymlink
			body = []byte(e.Link)
		case tar.TypeReg:
			body = e.Body
		case tar.TypeFifo:
			mode |= fs.ModeNamedPipe
		default:
			return fmt.Errorf("bundlegen: zip cannot hold %q entries", e.Type)
		}
		h.SetMode(mode)
		fw, err := zw.CreateHeader(h)
		if err != nil {
			return err
		}
		if _, err := fw.Write(body); err != nil {
			return err
		}
	}
	return zw.Close()
}

// MachineCode returns an endless stream that compresses about like x86
// machine code does (roughly 2.5:1 with gzip): short repeated instruction-like
// runs mixed with random bytes.
func MachineCode(seed int64) io.Reader {
	return &machineCode{rng: rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15))}
}

type machineCode struct {
	rng  *rand.Rand
	hist []byte
}

func (m *machineCode) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		var chunk []byte
		if len(m.hist) > 4096 && m.rng.IntN(10) < 7 {
			// Back-reference: repeat a recent run, as code repeats idioms.
			l := 8 + m.rng.IntN(24)
			start := len(m.hist) - 4096 + m.rng.IntN(4096-l)
			chunk = m.hist[start : start+l]
		} else {
			chunk = make([]byte, 4+m.rng.IntN(12))
			for i := range chunk {
				chunk[i] = byte(m.rng.Uint32())
			}
		}
		c := copy(p[n:], chunk)
		m.hist = append(m.hist, chunk[:c]...)
		if len(m.hist) > 1<<16 {
			m.hist = append(m.hist[:0:0], m.hist[len(m.hist)-8192:]...)
		}
		n += c
	}
	return n, nil
}

// WriteGzip gzips b into w (for archives that are gzip but not tar).
func WriteGzip(w io.Writer, b []byte) error {
	zw := gzip.NewWriter(w)
	if _, err := zw.Write(b); err != nil {
		return err
	}
	return zw.Close()
}
