// Package appfile opens and writes the files llamaboot keeps in its own
// directories (locks, cache and part files, download state, markers) as
// root: never through a symlink planted in their place, and with exactly
// the mode asked for whatever the umask, so other users can read the cache.
package appfile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
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

// Lock takes an exclusive flock on the lock file at path (created through
// OpenFile), polling until it is free or ctx ends; waiting, when set, is
// called once if another process holds it. unlock releases it.
func Lock(ctx context.Context, path string, waiting func()) (unlock func(), err error) {
	f, err := OpenFile(path, os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	for said := false; ; said = true {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !said && waiting != nil {
			waiting()
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
