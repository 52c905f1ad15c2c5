package install

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// EntryPointNames are the helper names the old image put in
// <app-dir>/llama-cpp; each is a link to the llamaboot binary, which
// dispatches on the name it was started under.
var EntryPointNames = []string{"check-and-run-llama-cpp.sh", "install-llama-cpp-pkg.sh", "get-llama-cpp-pkg.sh"}

// EnsureEntryPoints makes dir/<name> a symlink to self for each name,
// replacing whatever stood there. A missing self (tests, library use) makes
// it a no-op.
func EnsureEntryPoints(dir, self string, names []string) error {
	if self == "" {
		return nil
	}
	for _, n := range names {
		p := filepath.Join(dir, n)
		if t, err := os.Readlink(p); err == nil && t == self {
			continue
		}
		tmp := p + ".tmp"
		_ = os.Remove(tmp)
		if err := os.Symlink(self, tmp); err != nil {
			return fmt.Errorf("create entry point %s: %w", p, err)
		}
		if err := os.Rename(tmp, p); err != nil {
			_ = os.Remove(tmp)
			if errors.Is(err, fs.ErrExist) {
				continue
			}
			return fmt.Errorf("create entry point %s: %w", p, err)
		}
	}
	return nil
}
