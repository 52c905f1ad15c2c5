package archive

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
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
func resolve(root *os.Root, rel string, work *budget) (string, error) {
	return resolveFrom(root, rel, nil, work)
}

// resolveFrom resolves rel like resolve; reserved names, if any, are
// top-level names the installer writes after extraction, so resolving to
// or through one counts as leaving the bundle.
//
// The walk holds an open descriptor for each real directory on the way, so
// each component costs one fstatat (and a link one readlinkat), whatever
// its depth: looking every prefix up from the root again (as os.Root's
// path calls do) made a link at depth 250 cost tens of thousands of opens,
// and 100 of them more than a minute of CPU.
func resolveFrom(root *os.Root, rel string, reserved map[string]bool, work *budget) (string, error) {
	top, err := root.Open(".")
	if err != nil {
		return "", err
	}
	defer top.Close()
	fds := []int{int(top.Fd())} // fds[i] is the directory real[:i]
	defer func() {
		for _, fd := range fds[1:] {
			unix.Close(fd)
		}
	}()
	var real []string // components of the resolved path so far, all real directories
	todo := split(rel)
	hops, steps, ghost := 0, 0, 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		if steps++; steps > maxResolveSteps {
			return "", errLoop
		}
		if err := work.spend(1); err != nil {
			return "", err
		}
		if ghost > 0 {
			// Below a name that does not exist: taken as written, and a
			// `..` back out of it resumes the walk on disk.
			switch c {
			case "", ".":
			case "..":
				ghost--
				real = real[:len(real)-1]
			default:
				ghost++
				real = append(real, c)
			}
			continue
		}
		switch c {
		case "", ".":
			continue
		case "..":
			if len(real) == 0 {
				return "", errEscapes
			}
			unix.Close(fds[len(fds)-1])
			fds, real = fds[:len(fds)-1], real[:len(real)-1]
			continue
		}
		if len(real) == 0 && reserved[c] {
			return "", errEscapes
		}
		dir := fds[len(fds)-1]
		var st unix.Stat_t
		err := unix.Fstatat(dir, c, &st, unix.AT_SYMLINK_NOFOLLOW)
		switch {
		case errors.Is(err, unix.ENOENT):
			// Nothing there: what follows is taken as written, so a `..`
			// after a missing name still cannot climb past the top.
			ghost, real = 1, append(real, c)
		case err != nil:
			return "", err
		case st.Mode&unix.S_IFMT == unix.S_IFLNK:
			hops++
			if hops > maxLinkHops {
				return "", errLoop
			}
			target, err := readlinkat(dir, c)
			if err != nil {
				return "", err
			}
			if target == "" || strings.HasPrefix(target, "/") {
				return "", errEscapes
			}
			todo = append(split(target), todo...)
		case st.Mode&unix.S_IFMT == unix.S_IFDIR:
			fd, err := unix.Openat(dir, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return "", err
			}
			fds, real = append(fds, fd), append(real, c)
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
//
// Its work is bounded as extraction's is (lim.MaxWork path steps, or what
// is left of lim.Budget shared with the extraction), and it
// stops when lim.Context ends (SIGTERM).
func Audit(root *os.Root, lim Limits, reserved ...string) error {
	return audit(root, newBudget(lim), reserved...)
}

func audit(root *os.Root, work *budget, reserved ...string) error {
	res := map[string]bool{}
	for _, r := range reserved {
		res[r] = true
	}
	return fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return &Error{Entry: p, Reason: "cannot be read back from the bundle", Err: err}
		}
		if err := work.spend(depth(p)); err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		if _, err := resolveFrom(root, p, res, work); err != nil {
			target, _ := root.Readlink(p)
			return linkError(p, target, err)
		}
		return nil
	})
}

// readlinkat reads the target of the link name in the directory dirfd.
func readlinkat(dirfd int, name string) (string, error) {
	buf := make([]byte, maxPathBytes+1)
	n, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil {
		return "", err
	}
	if n > maxPathBytes {
		return "", errLoop
	}
	return string(buf[:n]), nil
}

// linkError explains why a symlink is refused.
func linkError(name, target string, err error) error {
	var be *Error
	switch {
	case errors.As(err, &be):
		if be.Entry == "" {
			be.Entry = shorten(name)
		}
		return be
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, errEscapes):
		return &Error{Entry: shorten(name), Reason: fmt.Sprintf("symlink target %q points outside the bundle (or at a file llamaboot writes itself)", shorten(target))}
	case errors.Is(err, errLoop):
		return &Error{Entry: shorten(name), Reason: fmt.Sprintf("symlink target %q starts a chain of more than %d links (a loop?)", shorten(target), maxLinkHops)}
	}
	return &Error{Entry: shorten(name), Reason: fmt.Sprintf("symlink target %q cannot be resolved", shorten(target)), Err: err}
}
