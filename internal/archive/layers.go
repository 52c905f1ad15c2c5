package archive

import (
	"archive/tar"
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/llamaboot/llamaboot/internal/bytesize"
)

// OCI whiteout names: ".wh.NAME" deletes NAME of the layers below; an
// opaque marker in a directory hides everything the layers below put there.
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// Layers applies the layers of a container image, lowest first, into one
// root, taking only what lies under one directory of the image (its
// llama.cpp directory, /app in the official images). Every entry taken goes
// through the same rules and limits as a tarball's; entries elsewhere in the
// image are read past, never written.
type Layers struct {
	w       *writer
	prefix  string          // the image path, cleaned, without its leading slash
	tops    map[string]bool // the image's top-level names, for a path that is missing
	found   bool            // the image path exists as a directory in some layer
	linkTo  string          // the image path is a symlink to this, in the last layer that set it
	skipped int64           // bytes of entries outside the image path, read and discarded
	n       int             // layers applied so far
	cat     *Catalog        // what lies outside the image path, when asked for
}

// NewLayers prepares to apply layers into dst, taking the directory
// imagePath of the image (such as /app).
func NewLayers(dst *os.Root, imagePath string, lim Limits) (*Layers, error) {
	p := path.Clean("/" + imagePath)
	if p == "/" || strings.ContainsRune(p, 0) {
		return nil, &Error{Reason: fmt.Sprintf("image path %q names no directory below the image's root (such as /app)", imagePath)}
	}
	return &Layers{w: newWriter(dst, lim), prefix: p[1:], tops: map[string]bool{}}, nil
}

// Apply applies one layer, given as its (decompressed) tar stream, and reads
// the stream to its end.
func (l *Layers) Apply(r io.Reader) error {
	br := bufio.NewReaderSize(r, 1<<20)
	if head, err := br.Peek(512); err != nil || !isTarHeader(head) {
		if len(head) == 0 || allZero(head) {
			return drain(br, Tar, 0, 0, "layer") // an empty layer: a bare end marker
		}
		return &Error{Reason: "the layer does not hold a tar archive"}
	}
	l.w.layer = map[string]bool{}
	l.n++
	tr := tar.NewReader(br)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return &Error{Reason: "corrupt or truncated layer", Err: err}
		}
		if err := l.entry(h, tr); err != nil {
			return err
		}
	}
	budget := l.w.lim.MaxExpanded - l.w.stats.Expanded - l.skipped
	return drain(br, Tar, max(budget, 0), l.w.lim.MaxExpanded, "layer's tar archive")
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// entry applies one member of a layer, or reads past it.
func (l *Layers) entry(h *tar.Header, r io.Reader) error {
	if h.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	// Layer members are named from the image's root, as "usr/bin/x",
	// "./usr/bin/x" or (rarely) "/usr/bin/x".
	name := strings.TrimPrefix(strings.TrimLeft(h.Name, "/"), "./")
	if _, err := clean(name); err != nil {
		return l.named(err, h.Name, "")
	}
	full := path.Clean(name)
	if full == "." {
		return nil
	}
	if top, _, _ := strings.Cut(full, "/"); !strings.HasPrefix(top, whiteoutPrefix) {
		l.tops[top] = true
	}
	if base := path.Base(full); strings.HasPrefix(base, whiteoutPrefix) {
		if l.cat != nil {
			if base == whiteoutOpaque {
				l.cat.remove(l.n-1, path.Dir(full), true)
			} else {
				l.cat.remove(l.n-1, path.Join(path.Dir(full), strings.TrimPrefix(base, whiteoutPrefix)), false)
			}
		}
		return l.whiteout(h.Name, path.Dir(full), base)
	}
	rel, inside := l.rel(full)
	if !inside {
		if l.cat != nil {
			l.cat.add(l.n-1, full, h, r)
		}
		return l.skip(h, r)
	}
	if rel == "" {
		switch h.Typeflag {
		case tar.TypeDir:
			l.found, l.linkTo = true, ""
		case tar.TypeSymlink:
			l.linkTo = h.Linkname
		}
		return nil
	}
	l.found = true
	if err := l.w.entry(h.Name); err != nil {
		return err
	}
	var err error
	switch h.Typeflag {
	case tar.TypeDir:
		err = l.w.dir(rel)
	case tar.TypeReg, tar.TypeGNUSparse:
		err = l.w.file(rel, h.FileInfo().Mode(), h.Size, r)
	case tar.TypeSymlink:
		err = l.w.symlink(rel, h.Linkname)
	case tar.TypeLink:
		target := strings.TrimPrefix(strings.TrimLeft(h.Linkname, "/"), "./")
		t, in := l.rel(path.Clean(target))
		if !in || t == "" || strings.Contains("/"+target+"/", "/../") {
			return &Error{Entry: h.Name, Reason: fmt.Sprintf("hardlink target %q lies outside the image's %s", h.Linkname, "/"+l.prefix)}
		}
		err = l.w.hardlink(rel, t)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		err = &Error{Entry: h.Name, Reason: "device and fifo entries are not allowed in a bundle"}
	default:
		err = &Error{Entry: h.Name, Reason: fmt.Sprintf("unsupported tar entry type %q", h.Typeflag)}
	}
	return l.named(err, h.Name, rel)
}

// named puts the member's name as the image has it into an error about
// its path inside the bundle.
func (l *Layers) named(err error, name, rel string) error {
	if ae, ok := err.(*Error); ok && (ae.Entry == rel || ae.Entry == shorten(rel) || rel == "") {
		ae.Entry = name
	}
	return err
}

// rel maps an image path to the bundle: "" for the image path itself.
func (l *Layers) rel(full string) (string, bool) {
	if full == l.prefix {
		return "", true
	}
	if rest, ok := strings.CutPrefix(full, l.prefix+"/"); ok {
		return rest, true
	}
	return "", false
}

// skip reads past a member outside the image path. Its bytes cost only
// time, but a bomb would cost a lot of it: they count against the limit of
// what the layers expand to (--max-expanded), as files' lengths do.
func (l *Layers) skip(h *tar.Header, r io.Reader) error {
	if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeGNUSparse {
		return nil
	}
	l.skipped += h.Size
	if h.Size < 0 || l.skipped+l.w.stats.Expanded > l.w.lim.MaxExpanded {
		return &Error{Entry: h.Name, Reason: fmt.Sprintf("the image's layers expand past %s (--max-expanded, default %d × --max-bytes: raise it if the image is genuine)", bytesize.Format(l.w.lim.MaxExpanded), ExpandedPerByte)}
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return &Error{Entry: h.Name, Reason: "layer is truncated or corrupt", Err: err}
	}
	return nil
}

// whiteout deletes, from the layers below, the name a whiteout in dir
// hides (or, for an opaque marker, everything in dir), where that lies in
// the image path. What this layer itself wrote stays.
func (l *Layers) whiteout(name, dir, base string) error {
	hidden := strings.TrimPrefix(base, whiteoutPrefix)
	if base != whiteoutOpaque && (hidden == "" || strings.HasPrefix(hidden, whiteoutPrefix)) {
		return nil // aufs's own bookkeeping (.wh..wh.plnk), not a deletion
	}
	target := path.Join(dir, hidden)
	if base == whiteoutOpaque {
		target = dir
	}
	if target == "." || target == l.prefix || strings.HasPrefix(l.prefix+"/", target+"/") {
		// The image path or a parent of it: all the layers below put
		// there goes; and the directory too unless only its content was.
		if base != whiteoutOpaque || target != l.prefix {
			l.found = false
		}
		if err := l.w.entry(name); err != nil {
			return err
		}
		return l.clear("")
	}
	rel, inside := l.rel(target)
	if !inside {
		return nil
	}
	if err := l.w.entry(name); err != nil {
		return err
	}
	if base == whiteoutOpaque {
		return l.clear(rel)
	}
	if l.w.layer[rel] {
		return nil
	}
	if err := l.w.root.RemoveAll(rel); err != nil {
		return l.named(l.w.fsError(name, err), name, "")
	}
	return nil
}

// clear removes what the layers below put in dir ("" for the root).
func (l *Layers) clear(dir string) error {
	d := dir
	if d == "" {
		d = "."
	}
	fi, err := l.w.root.Lstat(d)
	if err != nil || !fi.IsDir() {
		return nil
	}
	entries, err := fs.ReadDir(l.w.root.FS(), d)
	if err != nil {
		return nil
	}
	for _, e := range entries {
		p := path.Join(dir, e.Name())
		if l.w.layer[p] {
			continue
		}
		if err := l.w.root.RemoveAll(p); err != nil {
			return l.w.fsError(p, err)
		}
	}
	return nil
}

// Found reports whether the image path was a directory in the image.
func (l *Layers) Found() bool { return l.found }

// LinkTarget is where the image path leads when it is a symlink, else "".
func (l *Layers) LinkTarget() string { return l.linkTo }

// TopLevel lists the image's top-level names, sorted.
func (l *Layers) TopLevel() []string {
	var names []string
	for n := range l.tops {
		names = append(names, "/"+n)
	}
	sort.Strings(names)
	return names
}

// Finish vouches for the whole tree once every layer is applied: modes
// fixed, every link audited (a later layer can change where an earlier
// link leads).
func (l *Layers) Finish() (Stats, error) {
	return l.w.stats, l.w.finish()
}
