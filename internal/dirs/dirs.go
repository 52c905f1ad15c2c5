// Package dirs creates directories with exactly the mode asked for,
// whatever the process umask: an app dir created under umask 077 must still
// be readable by the non-root users who run llama-server from it.
package dirs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// MkdirAll is os.MkdirAll, then a chmod to perm of every directory it
// created (existing ones keep the mode their owner gave them).
func MkdirAll(path string, perm fs.FileMode) error {
	path = filepath.Clean(path)
	var missing []string
	for p := path; ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil || !errors.Is(err, fs.ErrNotExist) {
			break
		}
		missing = append(missing, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	if err := os.MkdirAll(path, perm); err != nil {
		return err
	}
	for _, p := range missing {
		if err := os.Chmod(p, perm); err != nil {
			return err
		}
	}
	return nil
}
