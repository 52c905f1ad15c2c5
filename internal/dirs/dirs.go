// Package dirs is the one way llamaboot reaches, creates and writes into
// the directories it keeps logs, models, locks, markers, cache and state
// in. Running as root, it may pass through directories a less-privileged
// user can write (a volume owned by uid 1000, /tmp), where a name can be
// swapped for a link between two calls. So a path is opened component by
// component with O_NOFOLLOW, a link is followed only when the current user
// (or root) owns it, every later call is made relative to the opened
// directory's fd, and modes are set with fchmod on an opened fd, never by
// path. A directory created under umask 077 still gets the mode asked for.
package dirs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxLinks bounds the links followed in one walk, as the kernel's 40.
const maxLinks = 40

// LinkError is a symbolic link on the way to a directory that a user
// other than the current one (or root) owns: following it would let that
// user choose where root writes. It is the configuration's to fix.
type LinkError struct {
	Path  string // the link
	Owner int    // its owner's uid
}

func (e *LinkError) Error() string {
	return fmt.Sprintf("%s is a symbolic link owned by uid %d; llamaboot (uid %d) does not follow links another user owns (they could point it anywhere): replace it with the directory it points to, or name that directory instead", e.Path, e.Owner, os.Geteuid())
}

// BadInput marks the error as the configuration's (exit status 2).
func (e *LinkError) BadInput() bool { return true }

// RaceError is a directory llamaboot created that was replaced before it
// could open it: someone who can write its parent is racing it.
type RaceError struct{ Path string }

func (e *RaceError) Error() string {
	return fmt.Sprintf("%s was replaced by another user while llamaboot created it; refused (its parent is writable by others)", e.Path)
}

// ChangeableError is a directory on the way to one llamaboot works in by
// path (the app dir) that a user other than root and llamaboot's own can
// change: that user could swap what follows it for a link while llamaboot
// works in it as root.
type ChangeableError struct {
	Path  string // the directory asked for
	Dir   string // the one another user can change
	Owner int
	Mode  fs.FileMode
	// Inside: Dir lies under Path (CheckTree), not on the way to it.
	Inside bool
	// File: Dir is a regular file another user can write.
	File bool
}

func (e *ChangeableError) Error() string {
	who := fmt.Sprintf("owned by uid %d", e.Owner)
	if trusted(e.Owner) {
		who = fmt.Sprintf("writable by anyone (mode %v, no sticky bit)", e.Mode.Perm())
	}
	if e.Inside {
		what := "directory"
		switch {
		case e.Mode&fs.ModeSymlink != 0:
			who, what = fmt.Sprintf("owned by uid %d", e.Owner), "symbolic link"
		case e.File && trusted(e.Owner):
			who = fmt.Sprintf("writable by anyone (mode %v)", e.Mode.Perm())
		}
		if e.File {
			return fmt.Sprintf("%s holds the file %s, %s, who could change it while llamaboot (uid %d) installs and runs from there; give it back to uid %d and close it to others (chown, chmod o-w) or remove it", e.Path, e.Dir, who, os.Geteuid(), os.Geteuid())
		}
		return fmt.Sprintf("%s holds the %s %s, %s, who could swap what is in it for a link while llamaboot works there as uid %d; give it back to uid %d (chown -R) or remove it (llamaboot makes what it needs again)", e.Path, what, e.Dir, who, os.Geteuid(), os.Geteuid())
	}
	return fmt.Sprintf("%s lies in %s, %s, who could swap it for a link while llamaboot works in it as uid %d; put it in directories only root (or uid %d) can change", e.Path, e.Dir, who, os.Geteuid(), os.Geteuid())
}

// BadInput marks the error as the configuration's (exit status 2).
func (e *ChangeableError) BadInput() bool { return true }

// CheckPath refuses a path any of whose existing directories (itself
// included, links resolved) a user other than root and the current one
// could change: one such a user owns, or one anyone can write that has no
// sticky bit (in /tmp, others cannot rename root's entries). A group-
// writable directory is trusted: the group is the administrator's choice
// (Kubernetes' fsGroup).
func CheckPath(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	p := abs
	for p != "/" {
		if _, err := os.Lstat(p); err == nil {
			break
		}
		p = filepath.Dir(p)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return err
	}
	for d := real; ; d = filepath.Dir(d) {
		var st unix.Stat_t
		if err := unix.Lstat(d, &st); err != nil {
			return &fs.PathError{Op: "lstat", Path: d, Err: err}
		}
		mode := fs.FileMode(st.Mode & 0o777)
		if st.Mode&unix.S_ISVTX != 0 {
			mode |= fs.ModeSticky
		}
		if !trusted(int(st.Uid)) || mode&0o002 != 0 && mode&fs.ModeSticky == 0 {
			return &ChangeableError{Path: abs, Dir: d, Owner: int(st.Uid), Mode: mode}
		}
		if d == "/" {
			return nil
		}
	}
}

// CheckTree refuses the tree at dir/name when a user other than root and
// the current one could change any name in it: a directory such a user owns
// or anyone can write without the sticky bit (CheckPath's rule), or a
// symbolic link such a user owns; or any file's content: a regular file
// such a user owns or anyone can write. With dir itself passing CheckPath, no
// other user can then create, rename or swap any name in the tree, so
// llamaboot may work in it by path. Missing is fine. The walk holds a
// descriptor per directory (no path is looked up twice, whatever the
// depth) and calls stop, when set, every so many entries (SIGTERM).
func CheckTree(dir, name string, stop func() error) error {
	d, err := Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	var st unix.Stat_t
	if err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return &fs.PathError{Op: "lstat", Path: d.Join(name), Err: err}
	}
	n := 0
	return checkEntry(d.fd, name, d.Join(name), &st, dir, stop, &n)
}

func checkEntry(parent int, name, p string, st *unix.Stat_t, top string, stop func() error, n *int) error {
	mode := fs.FileMode(st.Mode & 0o777)
	if st.Mode&unix.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		if !trusted(int(st.Uid)) {
			return &ChangeableError{Path: top, Dir: p, Owner: int(st.Uid), Mode: mode | fs.ModeSymlink, Inside: true}
		}
		return nil
	case unix.S_IFREG:
		// A file cannot lead anywhere, but one another user can write is
		// theirs to change: the llama-server root runs, a library.
		if !trusted(int(st.Uid)) || mode&0o002 != 0 {
			return &ChangeableError{Path: top, Dir: p, Owner: int(st.Uid), Mode: mode, Inside: true, File: true}
		}
		return nil
	case unix.S_IFDIR:
	default:
		return nil
	}
	if !trusted(int(st.Uid)) || mode&0o002 != 0 && mode&fs.ModeSticky == 0 {
		return &ChangeableError{Path: top, Dir: p, Owner: int(st.Uid), Mode: mode, Inside: true}
	}
	fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: p, Err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	for {
		ents, err := f.ReadDir(1024)
		for _, e := range ents {
			c := e.Name()
			if *n++; *n%4096 == 0 && stop != nil {
				if err := stop(); err != nil {
					return err
				}
			}
			var cst unix.Stat_t
			if err := unix.Fstatat(fd, c, &cst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				if errors.Is(err, unix.ENOENT) {
					continue
				}
				return &fs.PathError{Op: "lstat", Path: filepath.Join(p, c), Err: err}
			}
			if err := checkEntry(fd, c, filepath.Join(p, c), &cst, top, stop, n); err != nil {
				return err
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return &fs.PathError{Op: "readdir", Path: p, Err: err}
		}
	}
}

// Dir is an open directory, reached without following links another user
// owns. Calls on it resolve names relative to its fd.
type Dir struct {
	fd   int // O_PATH
	Path string
}

// Open opens the existing directory at path.
func Open(path string) (*Dir, error) { return walk(path, false, 0) }

// Make opens the directory at path, creating what is missing with mode
// perm exactly (existing directories keep the mode their owner gave them).
func Make(path string, perm fs.FileMode) (*Dir, error) { return walk(path, true, perm) }

// MkdirAll is Make, closing the directory.
func MkdirAll(path string, perm fs.FileMode) error {
	d, err := Make(path, perm)
	if err != nil {
		return err
	}
	return d.Close()
}

// OpenParent opens the directory holding path (created with perm when
// create is set) and returns it with path's last name.
func OpenParent(path string, create bool, perm fs.FileMode) (*Dir, string, error) {
	path = filepath.Clean(path)
	d, err := walk(filepath.Dir(path), create, perm)
	if err != nil {
		return nil, "", err
	}
	return d, filepath.Base(path), nil
}

func walk(path string, create bool, perm fs.FileMode) (*Dir, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: "/", Err: err}
	}
	at := "/" // the path of fd, for messages
	todo := split(abs)
	links := 0
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		next := filepath.Join(at, name)
		if name == ".." {
			nfd, err := unix.Openat(fd, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			unix.Close(fd)
			if err != nil {
				return nil, &fs.PathError{Op: "open", Path: next, Err: err}
			}
			fd, at = nfd, filepath.Dir(at)
			continue
		}
		created := false
		if create {
			err := unix.Mkdirat(fd, name, uint32(perm.Perm()))
			created = err == nil
			if err != nil && !errors.Is(err, unix.EEXIST) {
				unix.Close(fd)
				return nil, &fs.PathError{Op: "mkdir", Path: next, Err: err}
			}
		}
		nfd, err := unix.Openat(fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			unix.Close(fd)
			return nil, &fs.PathError{Op: "open", Path: next, Err: err}
		}
		var st unix.Stat_t
		if err := unix.Fstat(nfd, &st); err != nil {
			unix.Close(fd)
			unix.Close(nfd)
			return nil, &fs.PathError{Op: "stat", Path: next, Err: err}
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if created {
				if err := adopt(nfd, &st, perm); err != nil {
					unix.Close(fd)
					unix.Close(nfd)
					if err == errReplaced {
						return nil, &RaceError{Path: next}
					}
					return nil, &fs.PathError{Op: "chmod", Path: next, Err: err}
				}
			}
			unix.Close(fd)
			fd, at = nfd, next
		case unix.S_IFLNK:
			if !trusted(int(st.Uid)) {
				unix.Close(fd)
				unix.Close(nfd)
				return nil, &LinkError{Path: next, Owner: int(st.Uid)}
			}
			// The target read from the fd of the link itself is the target of
			// the link whose owner was just checked, whatever is swapped in.
			target, err := readlinkFd(nfd)
			unix.Close(nfd)
			if err != nil {
				unix.Close(fd)
				return nil, &fs.PathError{Op: "readlink", Path: next, Err: err}
			}
			if links++; links > maxLinks {
				unix.Close(fd)
				return nil, &fs.PathError{Op: "open", Path: next, Err: unix.ELOOP}
			}
			if filepath.IsAbs(target) {
				unix.Close(fd)
				if fd, err = unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
					return nil, &fs.PathError{Op: "open", Path: "/", Err: err}
				}
				at = "/"
			}
			todo = append(split(target), todo...)
		default:
			unix.Close(fd)
			unix.Close(nfd)
			return nil, &fs.PathError{Op: "open", Path: next, Err: unix.ENOTDIR}
		}
	}
	return &Dir{fd: fd, Path: abs}, nil
}

var errReplaced = errors.New("replaced")

// adopt sets the mode of a directory this walk just created, through the
// opened fd. One owned by someone else is not the one created: refused.
func adopt(pathFd int, st *unix.Stat_t, perm fs.FileMode) error {
	if int(st.Uid) != os.Geteuid() {
		return errReplaced
	}
	if fs.FileMode(st.Mode).Perm() == perm.Perm() {
		return nil
	}
	rfd, err := unix.Openat(pathFd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(rfd)
	return unix.Fchmod(rfd, uint32(perm.Perm()))
}

// trusted reports whether a link owned by uid may be followed: one of
// ours or root's (root decides everything anyway).
func trusted(uid int) bool { return uid == 0 || uid == os.Geteuid() }

func readlinkFd(fd int) (string, error) {
	for size := 256; size <= 1<<16; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
	return "", unix.ENAMETOOLONG
}

func split(p string) []string {
	var out []string
	for _, s := range strings.Split(p, "/") {
		if s != "" && s != "." {
			out = append(out, s)
		}
	}
	return out
}

// Close releases the directory.
func (d *Dir) Close() error { return unix.Close(d.fd) }

// Fd is the directory's O_PATH descriptor, for *at calls.
func (d *Dir) Fd() int { return d.fd }

// Join is the path of name in d, for messages.
func (d *Dir) Join(name string) string { return filepath.Join(d.Path, name) }

// Sync flushes the directory (a rename in it).
func (d *Dir) Sync() error {
	rfd, err := unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(rfd)
	return unix.Fsync(rfd)
}

// NotRegularError is something other than a regular file where llamaboot
// keeps one of its files (a FIFO, a device, a dir, a link).
type NotRegularError struct {
	Path string
	Mode fs.FileMode
}

func (e *NotRegularError) Error() string {
	what := "not a regular file"
	switch {
	case e.Mode&fs.ModeSymlink != 0:
		what = "a symbolic link"
	case e.Mode&fs.ModeNamedPipe != 0:
		what = "a FIFO"
	case e.Mode&(fs.ModeDevice|fs.ModeCharDevice) != 0:
		what = "a device"
	case e.Mode.IsDir():
		what = "a directory"
	case e.Mode&fs.ModeSocket != 0:
		what = "a socket"
	}
	return fmt.Sprintf("%s is %s, not a regular file; llamaboot neither reads nor writes through it: remove it", e.Path, what)
}

// BadInput marks the error as one for the user to clear (exit status 2).
func (e *NotRegularError) BadInput() bool { return true }

// LinkedError is a file llamaboot would write that has other hard links:
// writing would change the file those names share.
type LinkedError struct{ Path string }

func (e *LinkedError) Error() string {
	return fmt.Sprintf("%s has other hard links; llamaboot does not write a file shared with other names: remove it", e.Path)
}

// BadInput marks the error as one for the user to clear (exit status 2).
func (e *LinkedError) BadInput() bool { return true }

// OpenFile opens name in d: never through a link (O_NOFOLLOW), never
// waiting on a FIFO (O_NONBLOCK), and only a regular file. A file opened
// for writing must have no other hard links. A file this call creates gets
// perm exactly, set on the fd.
func (d *Dir) OpenFile(name string, flag int, perm fs.FileMode) (*os.File, error) {
	p := d.Join(name)
	// O_TRUNC waits until the file is known to be ours to change: a hard
	// link to a file of root's would be truncated by the open itself.
	trunc := flag&os.O_TRUNC != 0
	flag = flag&^os.O_TRUNC | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	created := false
	var fd int
	var err error
	for try := 0; ; try++ {
		created, err = false, unix.ENOENT
		if flag&os.O_CREATE != 0 {
			fd, err = unix.Openat(d.fd, name, flag|unix.O_EXCL, uint32(perm.Perm()))
			created = err == nil
		}
		if !created && flag&os.O_EXCL == 0 && (flag&os.O_CREATE == 0 || errors.Is(err, unix.EEXIST)) {
			fd, err = unix.Openat(d.fd, name, flag&^os.O_CREATE, 0)
		}
		// Removed between the two opens (a lock file its holder removes
		// on release): create it again.
		if flag&os.O_CREATE == 0 || !errors.Is(err, unix.ENOENT) || try == 8 {
			break
		}
	}
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.ENXIO) {
			if m, _, serr := d.Lstat(name); serr == nil && !m.IsRegular() {
				return nil, &NotRegularError{Path: p, Mode: m}
			}
		}
		return nil, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, &fs.PathError{Op: "stat", Path: p, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, &NotRegularError{Path: p, Mode: modeOf(st.Mode)}
	}
	if flag&(os.O_WRONLY|os.O_RDWR) != 0 && st.Nlink > 1 {
		f.Close()
		return nil, &LinkedError{Path: p}
	}
	if trunc && st.Size > 0 {
		if err := unix.Ftruncate(fd, 0); err != nil {
			f.Close()
			return nil, &fs.PathError{Op: "truncate", Path: p, Err: err}
		}
	}
	if created && fs.FileMode(st.Mode).Perm() != perm.Perm() {
		if err := unix.Fchmod(fd, uint32(perm.Perm())); err != nil {
			f.Close()
			return nil, &fs.PathError{Op: "chmod", Path: p, Err: err}
		}
	}
	return f, nil
}

func modeOf(m uint32) fs.FileMode {
	switch m & unix.S_IFMT {
	case unix.S_IFLNK:
		return fs.ModeSymlink
	case unix.S_IFIFO:
		return fs.ModeNamedPipe
	case unix.S_IFCHR:
		return fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		return fs.ModeDevice
	case unix.S_IFDIR:
		return fs.ModeDir
	case unix.S_IFSOCK:
		return fs.ModeSocket
	}
	return fs.ModeIrregular
}

// OpenRegular opens the regular file at path for reading as OpenFile
// does (no FIFO, nothing but a regular file), following links on the way
// and at the name itself only when root or the current user owns them (a
// package path kept as a link of the administrator's is followed; one a
// user planted in a dir of theirs, leading to a root-only archive, is
// refused with exit 2).
func OpenRegular(path string) (*os.File, error) {
	for hops := 0; ; hops++ {
		d, name, err := OpenParent(path, false, 0)
		if err != nil {
			return nil, err
		}
		lfd, err := unix.Openat(d.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			d.Close()
			return nil, &fs.PathError{Op: "open", Path: d.Join(name), Err: err}
		}
		var st unix.Stat_t
		err = unix.Fstat(lfd, &st)
		if err == nil && st.Mode&unix.S_IFMT != unix.S_IFLNK {
			unix.Close(lfd)
			f, err := d.OpenFile(name, os.O_RDONLY, 0)
			d.Close()
			return f, err
		}
		link := d.Join(name)
		var target string
		switch {
		case err != nil:
		case !trusted(int(st.Uid)):
			err = &LinkError{Path: link, Owner: int(st.Uid)}
		case hops >= maxLinks:
			err = &fs.PathError{Op: "open", Path: link, Err: unix.ELOOP}
		default:
			// Read from the link whose owner was just checked.
			target, err = readlinkFd(lfd)
		}
		unix.Close(lfd)
		d.Close()
		if err != nil {
			return nil, err
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(link), target)
		}
		path = target
	}
}

// Lstat describes name in d without following it.
func (d *Dir) Lstat(name string) (fs.FileMode, int64, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return 0, 0, &fs.PathError{Op: "lstat", Path: d.Join(name), Err: err}
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		return fs.FileMode(st.Mode).Perm(), st.Size, nil
	}
	return modeOf(st.Mode) | fs.FileMode(st.Mode).Perm(), st.Size, nil
}

// Remove removes the file (or link, never its target) name in d.
func (d *Dir) Remove(name string) error {
	if err := unix.Unlinkat(d.fd, name, 0); err != nil {
		return &fs.PathError{Op: "remove", Path: d.Join(name), Err: err}
	}
	return nil
}

// RemoveAll removes name in d and, if it is a directory, all it holds,
// never following a link out of d (through os.Root on d's own fd).
func (d *Dir) RemoveAll(name string) error {
	root, err := d.Root()
	if err != nil {
		return err
	}
	defer root.Close()
	return root.RemoveAll(name)
}

// Root is d as an os.Root, for walks that must stay inside it. It is
// opened through d's fd, not its path, so a swap of a parent since d was
// opened changes nothing.
func (d *Dir) Root() (*os.Root, error) {
	return os.OpenRoot("/proc/self/fd/" + strconv.Itoa(d.fd))
}

// Rename renames from to to, both in d.
func (d *Dir) Rename(from, to string) error {
	if err := unix.Renameat(d.fd, from, d.fd, to); err != nil {
		return &os.LinkError{Op: "rename", Old: d.Join(from), New: d.Join(to), Err: err}
	}
	return nil
}
