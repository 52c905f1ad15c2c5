package archive

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/llamaboot/llamaboot/internal/bytesize"
)

// Limits bound what one archive may expand to. Zero fields take defaults.
type Limits struct {
	MaxEntries int // number of entries of any kind
	// MaxBytes bounds what is written to disk: the data of regular files,
	// holes (runs of zeros left unwritten) not counted.
	MaxBytes int64
	// MaxExpanded bounds what the archive expands to and what reading it
	// costs: every regular file's length with its holes, members skipped
	// (an image's files outside the path taken) and data after the tar end
	// (default ExpandedPerByte × MaxBytes). A bomb of holes writes nothing
	// but takes time to read: this stops it.
	MaxExpanded int64
	// MaxWork bounds the path steps unpacking and auditing may cost
	// (default 30 per entry MaxEntries allows): deep names are cheap to
	// write into an archive and dear to check.
	MaxWork int64
	// Context, when set, stops the work when it ends (SIGTERM): every loop
	// checks it, the audit after extraction included.
	Context context.Context
	// Budget, when set, is the work budget this call spends from, shared
	// with the other passes of the same install (NewBudget); MaxWork and
	// Context are then the Budget's.
	Budget *Budget
}

// Default limits: generous enough for multi-GB CUDA builds with every backend,
// small enough to stop a decompression bomb before it fills the disk.
const (
	DefaultMaxEntries = 100_000
	DefaultMaxBytes   = 64 << 30
	// ExpandedPerByte is MaxExpanded's default per byte of MaxBytes: room
	// for genuinely sparse files, not for hours of reading zeros.
	ExpandedPerByte = 4
)

func (l Limits) withDefaults() Limits {
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxExpanded <= 0 {
		l.MaxExpanded = ExpandedPerByte * l.MaxBytes
	}
	if l.MaxWork <= 0 {
		l.MaxWork = int64(l.MaxEntries) * workPerEntry
	}
	return l
}

// Error is an archive the installer refuses: unsafe, corrupt, truncated,
// over a limit or of an unsupported format. It is the user's input at fault.
type Error struct {
	Entry  string // archive member at fault, if any
	Reason string
	Err    error
}

func (e *Error) Error() string {
	msg := e.Reason
	if e.Entry != "" {
		msg = fmt.Sprintf("entry %q: %s", shorten(e.Entry), e.Reason)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// BadInput marks the error as the archive's fault (exit status 2).
func (e *Error) BadInput() bool { return true }

// Stats describes what an extraction wrote.
type Stats struct {
	Entries  int
	Bytes    int64 // regular file bytes written (holes not counted)
	Expanded int64 // regular file lengths, holes included
}

// Decompress returns the tar stream inside r, read as format f. Call done
// when finished with it. Zip is not a stream: use ExtractZip.
func Decompress(r io.Reader, f Format) (tr io.Reader, done func(), err error) {
	switch f {
	case Tar:
		return r, func() {}, nil
	case Gzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, &Error{Reason: "corrupt gzip stream", Err: err}
		}
		return zr, func() { zr.Close() }, nil
	case Zstd:
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, nil, &Error{Reason: "corrupt zstd stream", Err: err}
		}
		return zr, zr.Close, nil
	case Xz:
		zr, err := xz.NewReader(r)
		if err != nil {
			return nil, nil, &Error{Reason: "corrupt xz stream", Err: err}
		}
		return zr, func() {}, nil
	case Zip:
		return nil, nil, errors.New("archive: zip needs ExtractZip")
	}
	return nil, nil, &Error{Reason: fmt.Sprintf("unsupported archive format %s (use .tar, .tar.gz, .tar.zst, .tar.xz or .zip)", f)}
}

// Extract decompresses and unpacks a tar-family stream into dst.
// Zip needs random access: use ExtractZip.
func Extract(r io.Reader, f Format, dst *os.Root, lim Limits) (Stats, error) {
	tr, done, err := Decompress(r, f)
	if err != nil {
		return Stats{}, err
	}
	defer done()
	br := bufio.NewReaderSize(tr, 1<<20)
	head, err := br.Peek(512)
	if err != nil || !isTarHeader(head) {
		return Stats{}, &Error{Reason: fmt.Sprintf("the %s stream does not hold a tar archive", f)}
	}
	w := newWriter(dst, lim)
	if _, err := extractTar(br, w); err != nil {
		return w.stats, err
	}
	if err := drain(br, f, w.lim.MaxExpanded-w.stats.Expanded, w.lim.MaxExpanded, "tar archive"); err != nil {
		return w.stats, err
	}
	return w.stats, w.finish()
}

// drain reads a stream on past its tar end marker. The marker comes before
// the compressor's own trailer (gzip's CRC-32, xz's and zstd's checks), so
// reading to the end catches a damaged trailer. Whatever follows the tar
// archive counts against --max-expanded (budget), so padding cannot hide a
// trailer nor cost unbounded time.
func drain(r io.Reader, f Format, budget, limit int64, what string) error {
	if n, err := io.CopyN(io.Discard, r, budget+1); err != nil && err != io.EOF {
		return &Error{Reason: fmt.Sprintf("corrupt %s stream after the %s", f, what), Err: err}
	} else if n > budget {
		return &Error{Reason: fmt.Sprintf("data after the %s expands past %s (raise --max-expanded if the bundle is genuine)", what, bytesize.Format(limit))}
	}
	return nil
}

func extractTar(r io.Reader, w *writer) (Stats, error) {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return w.stats, nil
		}
		if err != nil {
			return w.stats, &Error{Reason: "corrupt or truncated tar archive", Err: err}
		}
		if err := w.entry(h.Name); err != nil {
			return w.stats, err
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = w.dir(h.Name)
		case tar.TypeReg, tar.TypeGNUSparse: // the reader reports old TypeRegA entries as TypeReg
			err = w.file(h.Name, h.FileInfo().Mode(), h.Size, tr)
		case tar.TypeSymlink:
			err = w.symlink(h.Name, h.Linkname)
		case tar.TypeLink:
			err = w.hardlink(h.Name, h.Linkname)
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			err = &Error{Entry: h.Name, Reason: "device and fifo entries are not allowed in a bundle"}
		case tar.TypeXGlobalHeader:
			continue
		default:
			err = &Error{Entry: h.Name, Reason: fmt.Sprintf("unsupported tar entry type %q", h.Typeflag)}
		}
		if err != nil {
			return w.stats, err
		}
	}
}

// ExtractZip unpacks a zip archive read from ra into dst.
func ExtractZip(ra io.ReaderAt, size int64, dst *os.Root, lim Limits) (Stats, error) {
	zr, err := zip.NewReader(ra, size)
	if err != nil {
		return Stats{}, &Error{Reason: "corrupt or truncated zip archive", Err: err}
	}
	w := newWriter(dst, lim)
	for _, zf := range zr.File {
		if err := w.entry(zf.Name); err != nil {
			return w.stats, err
		}
		mode := zf.Mode()
		switch {
		case mode.IsDir():
			err = w.dir(zf.Name)
		case mode&fs.ModeSymlink != 0:
			err = w.zipSymlink(zf)
		case mode.IsRegular():
			err = w.zipFile(zf)
		default:
			err = &Error{Entry: zf.Name, Reason: "device, fifo and socket entries are not allowed in a bundle"}
		}
		if err != nil {
			return w.stats, err
		}
	}
	return w.stats, w.finish()
}

func (w *writer) zipFile(zf *zip.File) error {
	rc, err := zf.Open()
	if err != nil {
		return &Error{Entry: zf.Name, Reason: "cannot read zip entry", Err: err}
	}
	defer rc.Close()
	if err := w.file(zf.Name, zf.Mode(), int64(zf.UncompressedSize64), rc); err != nil {
		return err
	}
	// zip checks a member's CRC-32 and size only when it is read to its end,
	// one byte past what the header declares.
	if _, err := rc.Read(make([]byte, 1)); err != io.EOF {
		return &Error{Entry: zf.Name, Reason: "data is corrupt: its CRC-32 or size does not match the zip directory", Err: err}
	}
	return nil
}

func (w *writer) zipSymlink(zf *zip.File) error {
	rc, err := zf.Open()
	if err != nil {
		return &Error{Entry: zf.Name, Reason: "cannot read zip entry", Err: err}
	}
	defer rc.Close()
	target, err := io.ReadAll(io.LimitReader(rc, 4096))
	if err != nil {
		return &Error{Entry: zf.Name, Reason: "cannot read symlink target", Err: err}
	}
	return w.symlink(zf.Name, string(target))
}

func newWriter(dst *os.Root, lim Limits) *writer {
	lim = lim.withDefaults()
	return &writer{root: dst, lim: lim, work: newBudget(lim)}
}

// finish makes the directory modes right and audits the finished tree,
// within the same budget.
func (w *writer) finish() error {
	if err := fixDirModes(w.root, w.work); err != nil {
		return err
	}
	return audit(w.root, w.work)
}

// writer applies entries to the staging root, enforcing the bundle rules.
type writer struct {
	root  *os.Root
	lim   Limits
	work  *budget
	stats Stats
	// layer, when applying image layers, holds the paths the current layer
	// wrote: a path from a lower layer is replaced, one from the same layer
	// is a duplicate as in any archive. Nil for a plain archive.
	layer map[string]bool
}

// replace clears the way for an entry at p of an upper layer: whatever a
// lower layer left there goes, unless both are directories (they merge).
func (w *writer) replace(name, p string, dir bool) error {
	if w.layer == nil {
		return nil
	}
	fi, err := w.root.Lstat(p)
	if err != nil || w.layer[p] {
		return nil // nothing there, or this layer's own: the usual rules apply
	}
	w.layer[p] = true
	if dir && fi.IsDir() {
		return nil
	}
	if err := w.root.RemoveAll(p); err != nil {
		return w.fsError(name, err)
	}
	return nil
}

func (w *writer) wrote(p string) {
	if w.layer != nil {
		w.layer[p] = true
	}
}

func (w *writer) entry(name string) error {
	w.stats.Entries++
	if w.stats.Entries > w.lim.MaxEntries {
		return &Error{Entry: name, Reason: fmt.Sprintf("more than %d entries (raise --max-entries if the bundle is genuine)", w.lim.MaxEntries)}
	}
	// The calls made on an entry (parent, replace, create, chmod) each
	// walk its name from the root again.
	if err := w.work.spend(4 * depth(name)); err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Entry = shorten(name)
		}
		return err
	}
	return w.work.stopped()
}

// clean turns an archive member name into a safe relative path, or refuses it.
// It returns "" for the archive root itself.
func clean(name string) (string, error) {
	if strings.ContainsRune(name, 0) {
		return "", &Error{Entry: name, Reason: "name contains a NUL byte"}
	}
	if strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", &Error{Entry: fmt.Sprintf("%q", shorten(name)), Reason: "name contains control characters"}
	}
	if strings.HasPrefix(name, "/") {
		return "", &Error{Entry: shorten(name), Reason: "absolute path names are not allowed"}
	}
	if err := checkLength(name, name, "its name"); err != nil {
		return "", err
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", &Error{Entry: name, Reason: `".." in a path name is not allowed`}
		}
	}
	p := path.Clean(name)
	if p == "." {
		return "", nil
	}
	return p, nil
}

// Bounds on names and link targets. Linux itself stops at 4096 bytes per
// path; the component bound keeps the per-link resolution cheap (real
// bundles are a few levels deep) so a tiny archive cannot burn CPU for hours.
const (
	maxPathBytes      = 4096
	maxPathComponents = 256
)

func checkLength(entry, p, what string) error {
	if len(p) > maxPathBytes || strings.Count(p, "/") >= maxPathComponents {
		return &Error{Entry: entry, Reason: fmt.Sprintf("%s is longer than %d bytes or %d levels; no real bundle needs that", what, maxPathBytes, maxPathComponents)}
	}
	return nil
}

// shorten keeps an entry name printable in one line of an error.
func shorten(s string) string {
	if len(s) <= 200 {
		return s
	}
	return s[:100] + "…" + s[len(s)-60:]
}

// fixDirModes makes every directory 0755: MkdirAll (for parents no dir
// entry named) is subject to the umask, and the bundle must be usable by
// every user whatever umask root had.
func fixDirModes(root *os.Root, work *budget) error {
	return fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		if err := work.spend(2 * depth(p)); err != nil {
			return err
		}
		if err := root.Chmod(p, 0o755); err != nil {
			return fmt.Errorf("chmod %s: %w", p, err)
		}
		return nil
	})
}

func (w *writer) parent(p string) error {
	dir := path.Dir(p)
	if dir == "." {
		return nil
	}
	if err := w.root.MkdirAll(dir, 0o755); err != nil {
		return w.fsError(p, err)
	}
	return nil
}

func (w *writer) dir(name string) error {
	p, err := clean(name)
	if err != nil || p == "" {
		return err
	}
	if err := w.replace(name, p, true); err != nil {
		return err
	}
	if err := w.root.MkdirAll(p, 0o755); err != nil {
		return w.fsError(name, err)
	}
	w.wrote(p)
	// MkdirAll is subject to the umask; the bundle must be usable by anyone.
	if err := w.root.Chmod(p, 0o755); err != nil {
		return w.fsError(name, err)
	}
	return nil
}

func (w *writer) file(name string, mode fs.FileMode, size int64, r io.Reader) error {
	p, err := clean(name)
	if err != nil {
		return err
	}
	if p == "" {
		return &Error{Entry: name, Reason: "a file entry names the archive root"}
	}
	if size < 0 || w.stats.Expanded+size > w.lim.MaxExpanded {
		return &Error{Entry: name, Reason: fmt.Sprintf("expands past %s, holes included (--max-expanded, default %d × --max-bytes: raise it if the bundle is genuine)", bytesize.Format(w.lim.MaxExpanded), ExpandedPerByte)}
	}
	if err := w.parent(p); err != nil {
		return err
	}
	if err := w.replace(name, p, false); err != nil {
		return err
	}
	// Executables (any x bit) become 0755, everything else 0644; setuid,
	// setgid and sticky bits are dropped.
	perm := fs.FileMode(0o644)
	if mode.Perm()&0o111 != 0 {
		perm = 0o755
	}
	f, err := w.root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return w.fsError(name, err)
	}
	n, written, err := copySparse(f, io.LimitReader(r, size), w.lim.MaxBytes-w.stats.Bytes)
	if errors.Is(err, errWritten) {
		err = &Error{Entry: name, Reason: fmt.Sprintf("writes past %s to disk (raise --max-bytes if the bundle is genuine)", bytesize.Format(w.lim.MaxBytes))}
	}
	if err == nil && n != size {
		err = &Error{Entry: name, Reason: fmt.Sprintf("truncated: %d of %d bytes", n, size)}
	}
	if err == nil {
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		var ae *Error
		if errors.As(err, &ae) {
			return err
		}
		return w.readOrWriteError(name, err)
	}
	w.stats.Bytes += written
	w.stats.Expanded += n
	w.wrote(p)
	return nil
}

func (w *writer) symlink(name, target string) error {
	p, err := clean(name)
	if err != nil {
		return err
	}
	if p == "" {
		return &Error{Entry: name, Reason: "a symlink entry names the archive root"}
	}
	if target == "" || strings.HasPrefix(target, "/") || strings.ContainsRune(target, 0) {
		return &Error{Entry: name, Reason: fmt.Sprintf("symlink target %q points outside the bundle", shorten(target))}
	}
	if err := checkLength(name, target, "its symlink target"); err != nil {
		return err
	}
	if err := w.parent(p); err != nil {
		return err
	}
	if err := w.replace(name, p, false); err != nil {
		return err
	}
	// Judge the target from the directory that really holds the link: a
	// parent that is itself a link (`bin/p -> .`) puts it elsewhere.
	dir, err := resolve(w.root, path.Dir(p), w.work)
	if err != nil {
		return linkError(name, target, err)
	}
	if _, err := resolve(w.root, dir+"/"+target, w.work); err != nil {
		return linkError(name, target, err)
	}
	if err := w.root.Symlink(target, p); err != nil {
		return w.fsError(name, err)
	}
	w.wrote(p)
	return nil
}

func (w *writer) hardlink(name, target string) error {
	p, err := clean(name)
	if err != nil {
		return err
	}
	t, err := clean(target)
	if err != nil || t == "" {
		return &Error{Entry: name, Reason: fmt.Sprintf("hardlink target %q points outside the bundle", target)}
	}
	fi, err := w.root.Lstat(t)
	if err != nil {
		return &Error{Entry: name, Reason: fmt.Sprintf("hardlink target %q is not an earlier entry of the archive", target)}
	}
	if !fi.Mode().IsRegular() {
		return &Error{Entry: name, Reason: fmt.Sprintf("hardlink target %q is not a regular file", target)}
	}
	if err := w.parent(p); err != nil {
		return err
	}
	if t == p {
		return &Error{Entry: name, Reason: "hardlink to itself"}
	}
	if err := w.replace(name, p, false); err != nil {
		return err
	}
	if err := w.root.Link(t, p); err != nil {
		return w.fsError(name, err)
	}
	w.wrote(p)
	return nil
}

// fsError classifies a failure to create an entry: an escape through a
// symlink or a clash with an earlier entry is the archive's fault; anything
// else (ENOSPC, EIO) is the machine's.
func (w *writer) fsError(name string, err error) error {
	switch {
	case errors.Is(err, fs.ErrExist):
		return &Error{Entry: name, Reason: "duplicate entry or clash with an earlier symlink", Err: err}
	case errors.Is(err, syscall.ENAMETOOLONG):
		return &Error{Entry: name, Reason: "a name in its path is longer than the file system allows (255 bytes)", Err: err}
	case errors.Is(err, syscall.ELOOP):
		return &Error{Entry: name, Reason: "its path runs through a loop or too long a chain of symlinks", Err: err}
	case strings.Contains(err.Error(), "escapes from parent"), strings.Contains(err.Error(), "path escapes"):
		return &Error{Entry: name, Reason: "resolves outside the bundle through a symlink", Err: err}
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, os.ErrInvalid):
		return &Error{Entry: name, Reason: "cannot be created inside the bundle", Err: err}
	}
	var pe *fs.PathError
	if errors.As(err, &pe) && strings.Contains(pe.Err.Error(), "not a directory") {
		return &Error{Entry: name, Reason: "a parent of this entry is not a directory", Err: err}
	}
	return fmt.Errorf("write %s: %w", name, err)
}

// readOrWriteError tells a damaged archive (read side) from a full disk
// (write side) while copying an entry's bytes.
func (w *writer) readOrWriteError(name string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return &Error{Entry: name, Reason: "archive is truncated", Err: err}
	}
	return &Error{Entry: name, Reason: "archive data is corrupt", Err: err}
}
