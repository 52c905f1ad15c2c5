package archive

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
)

// maxLinkHops bounds how many symlinks one resolution follows, as the
// kernel's own limit (40) does; a longer chain is a loop or an attack.
const maxLinkHops = 40

var (
	errEscapes = errors.New("resolves outside the bundle")
	errLoop    = errors.New("too many levels of symbolic links")
)

// resolve returns where rel really lands inside root: every component is
// looked up on disk, and a symlink met on the way is replaced by its target,
// read from the directory that really holds it — never judged from the path
// as written, since a parent such as `p -> .` moves everything below it.
//
// Components that do not exist (yet) are taken as written. It fails with
// errEscapes if the walk leaves root (an absolute target or `..` past the
// top) and errLoop after maxLinkHops links.
func resolve(root *os.Root, rel string) (string, error) {
	var real []string // components of the resolved path so far, all real directories
	todo := split(rel)
	hops := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(real) == 0 {
				return "", errEscapes
			}
			real = real[:len(real)-1]
			continue
		}
		cur := path.Join(append(real, c)...)
		fi, err := root.Lstat(cur)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// Nothing there: what follows is taken as written, so a `..`
			// after a missing name still cannot climb past the top.
			real = append(real, c)
			continue
		case err != nil:
			return "", err
		case fi.Mode()&fs.ModeSymlink != 0:
			hops++
			if hops > maxLinkHops {
				return "", errLoop
			}
			target, err := root.Readlink(cur)
			if err != nil {
				return "", err
			}
			if target == "" || strings.HasPrefix(target, "/") {
				return "", errEscapes
			}
			todo = append(split(target), todo...)
		case fi.IsDir():
			real = append(real, c)
		default:
			// A file: the kernel stops here (ENOTDIR) if more follows, so
			// nothing below it can lead anywhere.
			return path.Join(append(real, c)...), nil
		}
	}
	if len(real) == 0 {
		return ".", nil
	}
	return path.Join(real...), nil
}

func split(p string) []string { return strings.Split(p, "/") }

// Audit walks the tree under root and refuses it if any symlink in it
// resolves outside root or loops. Extraction checks each link as it is
// created, but a link created later can change where an earlier one leads
// (`a -> q/../..` is harmless until `q -> .` arrives), so only a walk of the
// finished tree can vouch for all of them together.
func Audit(root *os.Root) error {
	return fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return &Error{Entry: p, Reason: "cannot be read back from the bundle", Err: err}
		}
		if d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		if _, err := resolve(root, p); err != nil {
			target, _ := root.Readlink(p)
			return linkError(p, target, err)
		}
		return nil
	})
}

// linkError explains why a symlink is refused.
func linkError(name, target string, err error) error {
	switch {
	case errors.Is(err, errEscapes):
		return &Error{Entry: name, Reason: fmt.Sprintf("symlink target %q points outside the bundle", target)}
	case errors.Is(err, errLoop):
		return &Error{Entry: name, Reason: fmt.Sprintf("symlink target %q starts a chain of more than %d links (a loop?)", target, maxLinkHops)}
	}
	return &Error{Entry: name, Reason: fmt.Sprintf("symlink target %q cannot be resolved", target), Err: err}
}
