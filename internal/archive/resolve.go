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
	return resolveFrom(root, rel, nil)
}

// resolveFrom resolves rel like resolve; reserved names, if any, are
// top-level names the installer writes after extraction, so resolving to
// or through one counts as leaving the bundle.
func resolveFrom(root *os.Root, rel string, reserved map[string]bool) (string, error) {
	var real []string // components of the resolved path so far, all real directories
	cur := ""         // path.Join(real...), kept alongside so each step is O(1) more
	todo := split(rel)
	hops, steps := 0, 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		if steps++; steps > maxResolveSteps {
			return "", errLoop
		}
		switch c {
		case "", ".":
			continue
		case "..":
			if len(real) == 0 {
				return "", errEscapes
			}
			real = real[:len(real)-1]
			cur = path.Join(real...)
			continue
		}
		if len(real) == 0 && reserved[c] {
			return "", errEscapes
		}
		next := c
		if cur != "" {
			next = cur + "/" + c
		}
		fi, err := root.Lstat(next)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// Nothing there: what follows is taken as written, so a `..`
			// after a missing name still cannot climb past the top.
			real, cur = append(real, c), next
			continue
		case err != nil:
			return "", err
		case fi.Mode()&fs.ModeSymlink != 0:
			hops++
			if hops > maxLinkHops {
				return "", errLoop
			}
			target, err := root.Readlink(next)
			if err != nil {
				return "", err
			}
			if target == "" || strings.HasPrefix(target, "/") {
				return "", errEscapes
			}
			todo = append(split(target), todo...)
		case fi.IsDir():
			real, cur = append(real, c), next
		default:
			// A file: the kernel stops here (ENOTDIR) if more follows, so
			// nothing below it can lead anywhere.
			return next, nil
		}
	}
	if cur == "" {
		return ".", nil
	}
	return cur, nil
}

// maxResolveSteps bounds the components one resolution walks through, links
// expanded: 40 links of at most 256 components each.
const maxResolveSteps = maxLinkHops * maxPathComponents

func split(p string) []string { return strings.Split(p, "/") }

// Audit walks the tree under root and refuses it if any symlink in it
// resolves outside root or loops. Extraction checks each link as it is
// created, but a link created later can change where an earlier one leads
// (`a -> q/../..` is harmless until `q -> .` arrives), so only a walk of the
// finished tree can vouch for all of them together.
//
// reserved are top-level names the caller will write after the audit (the
// installer's marker and helper links): a link leading to one of them is
// refused too, since it would lead wherever the caller's file does.
func Audit(root *os.Root, reserved ...string) error {
	res := map[string]bool{}
	for _, r := range reserved {
		res[r] = true
	}
	return fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return &Error{Entry: p, Reason: "cannot be read back from the bundle", Err: err}
		}
		if d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		if _, err := resolveFrom(root, p, res); err != nil {
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
		return &Error{Entry: shorten(name), Reason: fmt.Sprintf("symlink target %q points outside the bundle (or at a file llamaboot writes itself)", shorten(target))}
	case errors.Is(err, errLoop):
		return &Error{Entry: shorten(name), Reason: fmt.Sprintf("symlink target %q starts a chain of more than %d links (a loop?)", shorten(target), maxLinkHops)}
	}
	return &Error{Entry: shorten(name), Reason: fmt.Sprintf("symlink target %q cannot be resolved", shorten(target)), Err: err}
}
