package install

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
)

// compareTrees compares the trees under a (the installed bundle) and b
// (what the source gives) entry by entry: kind, permission bits, link
// target and content. Top-level names in skip (the marker, the helper
// links) are left aside. It returns how many entries it compared and the
// first difference in name order, "" when there is none.
func compareTrees(a, b *os.Root, skip []string) (int, string, error) {
	ea, err := listTree(a, skip)
	if err != nil {
		return 0, "", err
	}
	eb, err := listTree(b, skip)
	if err != nil {
		return 0, "", err
	}
	names := make([]string, 0, len(ea)+len(eb))
	for n := range ea {
		names = append(names, n)
	}
	for n := range eb {
		if _, ok := ea[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for i, n := range names {
		x, inA := ea[n]
		y, inB := eb[n]
		switch {
		case !inB:
			return i, fmt.Sprintf("%s is not in the source", n), nil
		case !inA:
			return i, fmt.Sprintf("%s is missing", n), nil
		case x.Mode().Type() != y.Mode().Type():
			return i, fmt.Sprintf("%s is a %s, the source's a %s", n, kind(x.Mode()), kind(y.Mode())), nil
		case x.Mode().Perm() != y.Mode().Perm():
			return i, fmt.Sprintf("%s has mode %#o, the source's %#o", n, x.Mode().Perm(), y.Mode().Perm()), nil
		}
		switch {
		case x.Mode()&fs.ModeSymlink != 0:
			ta, err := a.Readlink(n)
			if err != nil {
				return i, "", err
			}
			tb, err := b.Readlink(n)
			if err != nil {
				return i, "", err
			}
			if ta != tb {
				return i, fmt.Sprintf("%s links to %q, the source's to %q", n, ta, tb), nil
			}
		case x.Mode().IsRegular():
			if x.Size() != y.Size() {
				return i, fmt.Sprintf("%s differs in content (%d bytes, the source's %d)", n, x.Size(), y.Size()), nil
			}
			same, err := sameContent(a, b, n)
			if err != nil {
				return i, "", err
			}
			if !same {
				return i, fmt.Sprintf("%s differs in content", n), nil
			}
		}
	}
	return len(names), "", nil
}

// listTree lists every entry under root (not followed through links) by
// slash-separated name.
func listTree(root *os.Root, skip []string) (map[string]fs.FileInfo, error) {
	out := map[string]fs.FileInfo{}
	err := fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		if !strings.Contains(p, "/") && slices.Contains(skip, p) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out[p] = fi
		return nil
	})
	return out, err
}

// sameContent compares the file name under a and under b byte for byte.
func sameContent(a, b *os.Root, name string) (bool, error) {
	fa, err := a.Open(name)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := b.Open(name)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		endA := errors.Is(ea, io.EOF) || errors.Is(ea, io.ErrUnexpectedEOF)
		endB := errors.Is(eb, io.EOF) || errors.Is(eb, io.ErrUnexpectedEOF)
		switch {
		case ea != nil && !endA:
			return false, ea
		case eb != nil && !endB:
			return false, eb
		case endA || endB:
			return endA == endB, nil
		}
	}
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsRegular():
		return "file"
	}
	return "special file"
}
