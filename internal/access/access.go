// Package access explains a permission error to the person who hit it:
// which path refused, whose it is and its mode, who llamaboot runs as, and
// the flag, variable or TOML key that puts the file somewhere else.
package access

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// AppDir names what moves the app dir, for errors about files in it.
const AppDir = "--app-dir or AUTO_INFER_APP_DIR (default /soft/app)"

// Error is a permission error with what the user needs to act on it.
type Error struct {
	Op, Path string // what was refused: "mkdir", "/soft/app"
	// Refusing is the path whose permissions decided: Path itself when it
	// exists, else its nearest existing parent (creating needs write there).
	Refusing string
	Owner    string      // "root:root (0:0)"
	Mode     fs.FileMode // of Refusing
	Setting  string      // "--app-dir or AUTO_INFER_APP_DIR (default /soft/app)"
	Err      error
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("cannot %s %s: permission denied", e.Op, e.Path)
	if e.Refusing != "" {
		msg += fmt.Sprintf(" (%s is owned by %s, mode %s %04o; llamaboot runs as %s)", e.Refusing, e.Owner, e.Mode, e.Mode.Perm(), self())
	}
	if e.Setting != "" {
		msg += "; choose a place it can write with " + e.Setting + ", or run as its owner"
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Explain returns err as an *Error when it is a permission error on a
// path (EACCES, EPERM, EROFS), naming setting as what moves that path;
// any other error comes back unchanged.
func Explain(err error, setting string) error {
	var pe *fs.PathError
	if err == nil || !errors.As(err, &pe) || !denied(pe.Err) {
		return err
	}
	var ae *Error
	if errors.As(err, &ae) {
		return err
	}
	e := &Error{Op: pe.Op, Path: pe.Path, Setting: setting, Err: err}
	if errors.Is(pe.Err, syscall.EROFS) {
		e.Op += " (read-only file system)"
	}
	p := filepath.Clean(pe.Path)
	for {
		if fi, err := os.Lstat(p); err == nil && (p != filepath.Clean(pe.Path) || pe.Op != "mkdir") {
			e.Refusing, e.Mode, e.Owner = p, fi.Mode(), owner(fi)
			break
		}
		if filepath.Dir(p) == p {
			break
		}
		p = filepath.Dir(p)
	}
	return e
}

func denied(err error) bool {
	return errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EROFS)
}

func owner(fi fs.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "?"
	}
	return fmt.Sprintf("%s:%s", userName(st.Uid), groupName(st.Gid))
}

func self() string {
	return fmt.Sprintf("%s:%s", userName(uint32(os.Getuid())), groupName(uint32(os.Getgid())))
}

func userName(uid uint32) string {
	id := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(id); err == nil {
		return u.Username + "(" + id + ")"
	}
	return "uid " + id
}

func groupName(gid uint32) string {
	id := strconv.FormatUint(uint64(gid), 10)
	if g, err := user.LookupGroupId(id); err == nil {
		return g.Name + "(" + id + ")"
	}
	return "gid " + id
}
