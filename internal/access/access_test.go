package access

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestExplain(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	other := errors.New("disk on fire")
	for _, c := range []struct {
		name     string
		err      error
		refusing string // "" when the error must come back unchanged
		want     string
	}{
		{"not a permission error", other, "", "disk on fire"},
		{"not a path error", syscall.EACCES, "", "permission denied"},
		{"mkdir: the parent decides", &fs.PathError{Op: "mkdir", Path: filepath.Join(dir, "a", "b"), Err: syscall.EACCES}, dir,
			"cannot mkdir " + filepath.Join(dir, "a", "b") + ": permission denied (" + dir + " is owned by "},
		{"open of a file that exists: the file decides", &fs.PathError{Op: "open", Path: file, Err: syscall.EPERM}, file,
			"cannot open " + file + ": permission denied (" + file + " is owned by "},
		{"read-only", &fs.PathError{Op: "open", Path: file, Err: syscall.EROFS}, file, "cannot open (read-only file system) " + file},
	} {
		got := Explain(c.err, "--app-dir")
		var ae *Error
		switch {
		case c.refusing == "" && got != c.err:
			t.Errorf("%s: changed to %v", c.name, got)
		case c.refusing != "" && (!errors.As(got, &ae) || ae.Refusing != c.refusing || !errors.Is(got, c.err.(*fs.PathError).Err)):
			t.Errorf("%s: %#v", c.name, got)
		case !strings.Contains(got.Error(), c.want):
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		case c.refusing != "" && !strings.HasSuffix(got.Error(), "; choose a place it can write with --app-dir, or run as its owner"):
			t.Errorf("%s: %q does not say what moves it", c.name, got)
		}
	}
}
