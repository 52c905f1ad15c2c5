package archive_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/llamaboot/llamaboot/internal/archive"
)

// rawHeader is a ustar header block, made by hand: archive/tar does not
// write sparse members, and a hostile archive is not made by a friendly
// library anyway.
func rawHeader(name string, typ byte, size int64) []byte {
	b := make([]byte, 512)
	copy(b[0:], name)
	copy(b[100:], "0000644\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:], fmt.Sprintf("%011o\x00", size))
	copy(b[136:], "00000000000\x00")
	b[156] = typ
	copy(b[257:], "ustar\x0000")
	copy(b[148:], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func pad512(b []byte) []byte { return append(b, make([]byte, (512-len(b)%512)%512)...) }

func paxRecord(k, v string) string {
	n := len(k) + len(v) + 3
	for {
		s := fmt.Sprintf("%d %s=%s\n", n, k, v)
		if len(s) == n {
			return s
		}
		n = len(s)
	}
}

// sparseTar is a PAX 1.0 sparse member named name: 10 KiB of data
// stored, realsize long.
func sparseTar(name string, realsize int64) []byte {
	var out []byte
	recs := paxRecord("GNU.sparse.major", "1") + paxRecord("GNU.sparse.minor", "0") +
		paxRecord("GNU.sparse.name", name) + paxRecord("GNU.sparse.realsize", fmt.Sprint(realsize))
	out = append(out, rawHeader("PaxHeaders/x", 'x', int64(len(recs)))...)
	out = append(out, pad512([]byte(recs))...)
	body := append(pad512([]byte("1\n0\n10240\n")), bytes.Repeat([]byte("A"), 10240)...)
	out = append(out, rawHeader("GNUSparseFile.0/x", '0', int64(len(body)))...)
	out = append(out, pad512(body)...)
	return append(out, make([]byte, 1024)...)
}

// TestSparseMemberWrittenSparse: a 10 KiB sparse member of 2 GiB became a
// fully allocated 2 GiB file; it is written with holes, its length and
// data as the archive says.
func TestSparseMemberWrittenSparse(t *testing.T) {
	dst := t.TempDir()
	root, err := os.OpenRoot(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := archive.Extract(bytes.NewReader(sparseTar("big", 2<<30)), archive.Tar, root, archive.Limits{}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dst, "big"))
	if err != nil {
		t.Fatal(err)
	}
	used := fi.Sys().(*syscall.Stat_t).Blocks * 512
	if fi.Size() != 2<<30 || used > 1<<20 {
		t.Errorf("size %d, %d bytes allocated; want 2 GiB long and sparse", fi.Size(), used)
	}
	f, _ := os.Open(filepath.Join(dst, "big"))
	head := make([]byte, 10241)
	f.ReadAt(head, 0)
	f.Close()
	if !bytes.Equal(head[:10240], bytes.Repeat([]byte("A"), 10240)) || head[10240] != 0 {
		t.Errorf("data not where the archive put it")
	}
}

// TestControlCharactersInEntryNames: a name with a newline or an escape
// sequence (which would forge lines or recolour a terminal in messages) is
// refused.
func TestControlCharactersInEntryNames(t *testing.T) {
	for _, name := range []string{"bin/llama\nserver", "lib/a\x1b[2Jb.so", "x\x7f"} {
		var buf bytes.Buffer
		buf.Write(rawHeader(name, '0', 1))
		buf.Write(pad512([]byte("x")))
		buf.Write(make([]byte, 1024))
		dst := t.TempDir()
		root, _ := os.OpenRoot(dst)
		_, err := archive.Extract(&buf, archive.Tar, root, archive.Limits{})
		root.Close()
		var ae *archive.Error
		if !errors.As(err, &ae) || !strings.Contains(err.Error(), "name contains control characters") || strings.ContainsAny(err.Error(), "\n\x1b\x7f") {
			t.Errorf("%q: %v", name, err)
		}
	}
}

// TestSparseLimits: --max-bytes is about the disk, so it counts what is
// written, not holes: a 10 KiB member 2 GiB long (64 KiB written, the
// block holding its data) passes a 600 MiB limit
// (it was refused, its length counted in full). Its length still counts
// against --max-expanded (default 4 × --max-bytes), since a bomb of holes
// writes nothing but takes time to read: under a 100 MiB --max-bytes it is
// refused, the limit named. Data that is written counts in full, and
// stops the copy at the limit.
func TestSparseLimits(t *testing.T) {
	extract := func(data []byte, lim archive.Limits) (archive.Stats, string, error) {
		dst := t.TempDir()
		root, err := os.OpenRoot(dst)
		if err != nil {
			t.Fatal(err)
		}
		defer root.Close()
		st, err := archive.Extract(bytes.NewReader(data), archive.Tar, root, lim)
		return st, dst, err
	}
	st, _, err := extract(sparseTar("big", 2<<30), archive.Limits{MaxBytes: 600 << 20})
	if err != nil || st.Bytes != 64<<10 || st.Expanded != 2<<30 { // its data in one 64 KiB block
		t.Errorf("2 GiB long, 10 KiB written, under a 600 MiB --max-bytes: %+v %v", st, err)
	}
	_, _, err = extract(sparseTar("big", 2<<30), archive.Limits{MaxBytes: 1 << 20, MaxExpanded: 3 << 30})
	if err != nil {
		t.Errorf("--max-bytes 1 MiB, --max-expanded 3 GiB: %v", err)
	}
	var ae *archive.Error
	_, _, err = extract(sparseTar("big", 2<<30), archive.Limits{MaxBytes: 100 << 20})
	if !errors.As(err, &ae) || !strings.Contains(err.Error(), `"big": expands past 400MiB, holes included (--max-expanded, default 4 × --max-bytes`) {
		t.Errorf("a bomb of holes under a 100 MiB --max-bytes: %v", err)
	}
	dense := bytes.Repeat([]byte("0123456789abcdef"), 128<<10) // 2 MiB, no zeros
	var tb bytes.Buffer
	tb.Write(rawHeader("dense", '0', int64(len(dense))))
	tb.Write(pad512(dense))
	tb.Write(make([]byte, 1024))
	_, dst, err := extract(tb.Bytes(), archive.Limits{MaxBytes: 1 << 20})
	if !errors.As(err, &ae) || !strings.Contains(err.Error(), `"dense": writes past 1MiB to disk (raise --max-bytes`) {
		t.Errorf("2 MiB of data under a 1 MiB --max-bytes: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "dense")); err == nil && fi.Size() > 1<<20 {
		t.Errorf("%d bytes written past the 1 MiB limit", fi.Size())
	}
}
