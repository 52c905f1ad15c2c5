// Package appfile opens, reads and writes the side files llamaboot keeps
// beside its bundles and models (locks, cache and part files, download
// state, markers, run records, the flags cache) as root: reached through
// package dirs (no link another user owns is followed on the way), never
// through a link planted at the name, never waiting on a FIFO, only regular
// files, read with a size cap, and with exactly the mode asked for whatever
// the umask, so other users can read the cache.
package appfile

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/llamaboot/llamaboot/internal/dirs"
)

// MaxSideFile caps what ReadFile reads by default: side files are small
// JSON and text; something bigger (a link to /dev/zero once was) is refused.
const MaxSideFile = 1 << 20

// OpenFile opens path for llamaboot's own use, creating it (perm exactly)
// when missing. A symbolic link found at path is removed (llamaboot owns
// the name; whoever planted the link does not get root's write through it)
// and the file created afresh; any other non-regular file is refused.
func OpenFile(path string, flag int, perm fs.FileMode) (*os.File, error) {
	d, name, err := dirs.OpenParent(path, false, 0)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return OpenIn(d, name, flag, perm)
}

// OpenIn is OpenFile for name in an opened directory.
func OpenIn(d *dirs.Dir, name string, flag int, perm fs.FileMode) (*os.File, error) {
	f, err := d.OpenFile(name, flag|os.O_CREATE, perm)
	var nr *dirs.NotRegularError
	if errors.As(err, &nr) && nr.Mode&fs.ModeSymlink != 0 {
		if rerr := d.Remove(name); rerr != nil {
			return nil, fmt.Errorf("%s is a symbolic link that cannot be removed: %w", d.Join(name), rerr)
		}
		f, err = d.OpenFile(name, flag|os.O_CREATE|os.O_EXCL, perm)
	}
	return f, err
}

// WriteFile writes data to path through OpenFile, truncating it.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	d, name, err := dirs.OpenParent(path, false, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	return WriteIn(d, name, data, perm)
}

// WriteIn is WriteFile for name in an opened directory.
func WriteIn(d *dirs.Dir, name string, data []byte, perm fs.FileMode) error {
	f, err := OpenIn(d, name, os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Replace writes data to path whole: into a temp name beside it (the
// process id in it, so concurrent writers do not share one), then a
// rename in the same opened directory, so readers never see half of it.
func Replace(path string, data []byte, perm fs.FileMode) error {
	d, name, err := dirs.OpenParent(path, false, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	tmp := "." + name + "." + strconv.Itoa(os.Getpid()) + ".tmp"
	err = WriteIn(d, tmp, data, perm)
	if err == nil {
		err = d.Rename(tmp, name)
	}
	if err != nil {
		_ = d.Remove(tmp)
	}
	return err
}

// TooBigError is a side file over the size llamaboot reads of it.
type TooBigError struct {
	Path string
	Max  int64
}

func (e *TooBigError) Error() string {
	return fmt.Sprintf("%s is over %d bytes, more than llamaboot ever writes there; remove it", e.Path, e.Max)
}

// ReadFile reads the regular file at path, at most max bytes (<= 0:
// MaxSideFile): without following a link at path, without waiting on a FIFO,
// and never more than the cap, whatever the file claims to be.
func ReadFile(path string, max int64) ([]byte, error) {
	d, name, err := dirs.OpenParent(path, false, 0)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	f, err := d.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if max <= 0 {
		max = MaxSideFile
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, &TooBigError{Path: path, Max: max}
	}
	return b, nil
}

// HeldError is a lock another process held for longer than the wait
// allowed; Holder is its pid when the kernel says (0 otherwise).
type HeldError struct {
	Path   string
	Holder int
	Waited time.Duration
}

func (e *HeldError) Error() string {
	who := "another process"
	if e.Holder > 0 {
		who = "pid " + strconv.Itoa(e.Holder)
		if comm, err := os.ReadFile("/proc/" + strconv.Itoa(e.Holder) + "/comm"); err == nil {
			who += " (" + strings.TrimSpace(string(comm)) + ")"
		}
	}
	return fmt.Sprintf("gave up after %s waiting for the lock %s, held by %s; retry when it is done, or stop it", e.Waited, e.Path, who)
}

// Lock takes an exclusive flock on the lock file at path (created through
// OpenFile), polling until it is free, ctx ends (SIGTERM) or timeout passes
// without progress; waiting, when set, is called once if another process
// holds it. progress, when set, is polled while waiting: each change of its
// value (the holder's download growing) starts the timeout again, so a
// long download by another process is waited for and a stuck holder is not.
// unlock releases it.
func Lock(ctx context.Context, path string, timeout time.Duration, waiting func(holder int), progress func() int64) (unlock func(), err error) {
	f, err := lockFile(ctx, path, timeout, waiting, progress)
	if err != nil {
		return nil, err
	}
	return func() { f.Close() }, nil
}

// LockEphemeral is Lock for a lock file that exists only while it is held:
// unlock removes it (still holding the lock) before releasing it. A waiter
// that then gets the lock on the removed file sees that path names another
// file, or none, and locks again, so two processes never both hold it.
func LockEphemeral(ctx context.Context, path string, timeout time.Duration, waiting func(holder int), progress func() int64) (unlock func(), err error) {
	for {
		f, err := lockFile(ctx, path, timeout, waiting, progress)
		if err != nil {
			return nil, err
		}
		held, err1 := f.Stat()
		now, err2 := os.Lstat(path)
		if err1 == nil && err2 == nil && os.SameFile(held, now) {
			return func() {
				_ = os.Remove(path)
				f.Close()
			}, nil
		}
		f.Close()
		waiting = nil // said once already, if at all
	}
}

// LockMode is a lock file's mode: flock needs only an open descriptor, so a
// lock file others can read is one any user can hold, keeping root's
// install or download waiting; the group is the administrator's (shared
// volumes, fsGroup).
const LockMode fs.FileMode = 0o660

// OpenLock opens (creating) the lock file at path through OpenFile with
// LockMode; one of ours that others can open (0644, as llamaboot once made
// them) is closed to them first.
func OpenLock(path string) (*os.File, error) {
	f, err := OpenFile(path, os.O_RDWR, LockMode)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err == nil && int(st.Uid) == os.Geteuid() && st.Mode&0o007 != 0 {
		if err := unix.Fchmod(int(f.Fd()), uint32(LockMode)); err != nil {
			f.Close()
			return nil, &fs.PathError{Op: "chmod", Path: path, Err: err}
		}
	}
	return f, nil
}

func lockFile(ctx context.Context, path string, timeout time.Duration, waiting func(holder int), progress func() int64) (*os.File, error) {
	f, err := OpenLock(path)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	start := time.Now()
	deadline := start.Add(timeout)
	var last int64
	if progress != nil {
		last = progress()
	}
	for said := false; ; said = true {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !said && waiting != nil {
			waiting(Holder(f))
		}
		if progress != nil {
			if now := progress(); now != last {
				last, deadline = now, time.Now().Add(timeout)
			}
		}
		if timeout > 0 && time.Now().After(deadline) {
			holder := Holder(f)
			f.Close()
			return nil, &HeldError{Path: path, Holder: holder, Waited: time.Since(start).Round(time.Second)}
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Holder is the pid holding a flock on f's file, from /proc/locks (0 when
// none is listed or the pid is in another namespace).
func Holder(f *os.File) int {
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil {
		return 0
	}
	lf, err := os.Open("/proc/locks")
	if err != nil {
		return 0
	}
	defer lf.Close()
	// "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
	want := fmt.Sprintf(":%d", st.Ino)
	sc := bufio.NewScanner(io.LimitReader(lf, 4<<20))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" || !strings.HasSuffix(fields[5], want) {
			continue
		}
		if maj, min, ok := devOf(fields[5]); !ok || maj != unix.Major(st.Dev) || min != unix.Minor(st.Dev) {
			continue
		}
		if pid, err := strconv.Atoi(fields[4]); err == nil {
			return pid
		}
	}
	return 0
}

func devOf(field string) (uint32, uint32, bool) {
	parts := strings.Split(field, ":")
	if len(parts) != 3 {
		return 0, 0, false
	}
	maj, err1 := strconv.ParseUint(parts[0], 16, 32)
	min, err2 := strconv.ParseUint(parts[1], 16, 32)
	return uint32(maj), uint32(min), err1 == nil && err2 == nil
}
