// Package appfile opens and writes the files llamaboot keeps in its own
// directories (locks, cache and part files, download state, markers) as
// root: never through a symlink planted in their place, and with exactly
// the mode asked for whatever the umask, so other users can read the cache.
package appfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// OpenFile is os.OpenFile that does not follow a symlink at path: one found
// there is removed (llamaboot owns the name; whoever planted the link does
// not get root's write through it) and the file created afresh. A file this
// call creates gets perm exactly.
func OpenFile(path string, flag int, perm fs.FileMode) (*os.File, error) {
	flag |= syscall.O_NOFOLLOW | syscall.O_CLOEXEC
	f, err := os.OpenFile(path, flag|os.O_CREATE|os.O_EXCL, perm)
	created := err == nil
	if errors.Is(err, fs.ErrExist) {
		f, err = os.OpenFile(path, flag, perm)
	}
	if errors.Is(err, syscall.ELOOP) {
		if rerr := os.Remove(path); rerr != nil {
			return nil, fmt.Errorf("%s is a symbolic link that cannot be removed: %w", path, rerr)
		}
		f, err = os.OpenFile(path, flag|os.O_CREATE|os.O_EXCL, perm)
		created = err == nil
	}
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file; remove it", path)
	}
	if created {
		if err := f.Chmod(perm); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// WriteFile writes data to path through OpenFile, truncating it.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	f, err := OpenFile(path, os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
