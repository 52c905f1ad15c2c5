package install

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// layout of an app dir:
//
//	<app>/llama-cpp                 symlink -> llama-cpp.versions/<version>
//	<app>/llama-cpp.versions/<v>    one complete bundle each (current, previous)
//	<app>/llama-cpp.versions/.staging-*  work in progress, removed by the next run
//	<app>/cache/<archive>           the cached archive
const (
	installName  = "llama-cpp"
	versionsName = "llama-cpp.versions"
	stagingPfx   = ".staging-"
	linkTmpPfx   = ".llama-cpp.link-"
)

// activate points <app>/llama-cpp at versions/<version> with one rename, so
// the install path is always a whole bundle. It returns the version that was
// active before ("" if none, or a legacy dir's new name).
func activate(app, version string) (previous string, err error) {
	link := filepath.Join(app, installName)
	prev, _ := os.Readlink(link)
	tmp := filepath.Join(app, fmt.Sprintf("%s%d", linkTmpPfx, time.Now().UnixNano()))
	if err := os.Symlink(filepath.Join(versionsName, version), tmp); err != nil {
		return "", fmt.Errorf("activate: %w", err)
	}
	defer os.Remove(tmp)

	fi, err := os.Lstat(link)
	switch {
	case err == nil && fi.IsDir():
		previous, err = migrateLegacy(app, link, tmp)
		if err != nil {
			return "", err
		}
	case err == nil || errors.Is(err, fs.ErrNotExist):
		if err := os.Rename(tmp, link); err != nil {
			return "", fmt.Errorf("activate %s: %w", link, err)
		}
		if prev != "" {
			previous = filepath.Base(prev)
		}
	default:
		return "", fmt.Errorf("activate %s: %w", link, err)
	}
	return previous, syncDir(app)
}

// migrateLegacy replaces a plain llama-cpp directory (from the old scripts,
// or baked into an image) by the symlink at tmp, once.
//
// The old tree is first copied to a version dir for rollback: after the
// switch its original may be unreadable (fuse-overlayfs cannot list a
// swapped-out lower-layer dir). RENAME_EXCHANGE then swaps the two names in
// one step. Where the swap itself is refused (EXDEV from overlayfs for a
// lower-layer dir, or no RENAME_EXCHANGE), the tree is removed and the
// symlink renamed into its place: a one-time window that recoverLink
// repairs on the next run.
func migrateLegacy(app, link, tmp string) (string, error) {
	legacy := fmt.Sprintf("legacy-%d", time.Now().Unix())
	dst := filepath.Join(app, versionsName, legacy)
	if err := copyTree(link, dst); err != nil {
		_ = os.RemoveAll(dst)
		return "", fmt.Errorf("keep old bundle as %s: %w", dst, err)
	}
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, link, unix.RENAME_EXCHANGE)
	if err == nil {
		// tmp now names the old tree; a failure to remove it is cleaned
		// up by the next run.
		_ = os.RemoveAll(tmp)
		return legacy, nil
	}
	if !errors.Is(err, unix.EXDEV) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
		_ = os.RemoveAll(dst)
		return "", fmt.Errorf("activate %s: %w", link, err)
	}
	if err := os.RemoveAll(link); err != nil {
		return "", fmt.Errorf("remove legacy %s: %w", link, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		return "", fmt.Errorf("activate %s: %w", link, err)
	}
	return legacy, nil
}

// recoverLink re-points a missing llama-cpp at the newest complete version,
// repairing a run killed inside the legacy migration window.
func recoverLink(app string) (string, bool) {
	link := filepath.Join(app, installName)
	if _, err := os.Lstat(link); !errors.Is(err, fs.ErrNotExist) {
		return "", false
	}
	var best string
	var bestAt int64 = -1
	for _, v := range listVersions(app) {
		m, err := ReadMarker(filepath.Join(app, versionsName, v))
		if err != nil && !strings.HasPrefix(v, "legacy-") {
			continue
		}
		if m.InstalledAtUnix > bestAt {
			best, bestAt = v, m.InstalledAtUnix
		}
	}
	if best == "" {
		return "", false
	}
	if _, err := activate(app, best); err != nil {
		return "", false
	}
	return best, true
}

func listVersions(app string) []string {
	entries, _ := os.ReadDir(filepath.Join(app, versionsName))
	var out []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// cleanStale removes what a killed run left: staging dirs, temporary links
// and partial cache files. Called under the install lock.
func cleanStale(app string) {
	remove := func(dir, prefix string) {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), prefix) {
				_ = os.RemoveAll(filepath.Join(dir, e.Name()))
			}
		}
	}
	remove(filepath.Join(app, versionsName), stagingPfx)
	remove(app, linkTmpPfx)
	remove(filepath.Join(app, "cache"), ".part-")
}

// copyTree copies src to dst preserving symlinks and modes (no setuid bits).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			return os.Chmod(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(t, target)
		case d.Type().IsRegular():
			return copyFile(p, target, fi.Mode().Perm()&0o777)
		}
		return nil // sockets and such have no place in a bundle
	})
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncFS flushes the file system holding dir: one call covers every file the
// extraction wrote, cheaper than an fsync per file.
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil && !errors.Is(err, syscall.ENOSYS) {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}
