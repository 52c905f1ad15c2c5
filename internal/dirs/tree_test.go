package dirs

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestCheckTreeProperty: over 300 generated trees of dirs, links and files
// (owned by root or uid 1000, dirs 0755, 0777 or 01777, files 0644, 0664
// or 0666), CheckTree refuses exactly the trees in which uid 1000 could
// change a name or a file — a dir it owns, a dir anyone can write without
// the sticky bit, a link it owns, a file it owns or anyone can write — and
// names one of them; every other tree passes (group-writable is the
// administrator's). That is the ground of the install
// working below a checked app dir by path: nothing there can be swapped.
func TestCheckTreeProperty(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test needs root (CI runs as root) to make uid 1000's files")
	}
	rng := rand.New(rand.NewPCG(19, 3))
	refused := 0
	for i := range 300 {
		base := t.TempDir()
		var bad []string
		var grow func(dir string, depth int)
		grow = func(dir string, depth int) {
			for k := range rng.IntN(4) {
				p := filepath.Join(dir, fmt.Sprintf("e%d", k))
				owner := 0
				if rng.IntN(12) == 0 {
					owner = 1000
				}
				switch kind := rng.IntN(5); {
				case kind <= 1 && depth < 4:
					mode := []fs.FileMode{0o755, 0o755, 0o755, 0o755, 0o777, 0o777 | fs.ModeSticky}[rng.IntN(6)]
					os.Mkdir(p, 0o755)
					os.Chmod(p, mode)
					os.Lchown(p, owner, owner)
					if owner != 0 || mode == 0o777 {
						bad = append(bad, p)
					}
					grow(p, depth+1)
				case kind == 2:
					os.Symlink("/etc", p)
					os.Lchown(p, owner, owner)
					if owner != 0 {
						bad = append(bad, p)
					}
				default:
					mode := []fs.FileMode{0o644, 0o644, 0o664, 0o666}[rng.IntN(4)]
					os.WriteFile(p, []byte("x"), 0o644)
					os.Chmod(p, mode)
					os.Chown(p, owner, owner)
					// Its content is theirs to change: the executable
					// root runs, a library.
					if owner != 0 || mode == 0o666 {
						bad = append(bad, p)
					}
				}
			}
		}
		top := filepath.Join(base, "cache")
		os.Mkdir(top, 0o755)
		grow(top, 0)
		err := CheckTree(base, "cache", nil)
		var ce *ChangeableError
		switch {
		case len(bad) == 0 && err != nil:
			t.Fatalf("tree %d: nothing changeable by uid 1000, refused: %v", i, err)
		case len(bad) > 0 && !errors.As(err, &ce):
			t.Fatalf("tree %d: %v changeable by uid 1000, got %v", i, bad, err)
		case len(bad) > 0 && !contains(bad, ce.Dir):
			t.Fatalf("tree %d: refused naming %s, not one of %v", i, ce.Dir, bad)
		case len(bad) > 0 && !strings.Contains(err.Error(), ce.Dir):
			t.Fatalf("tree %d: message does not name %s: %v", i, ce.Dir, err)
		}
		if len(bad) > 0 {
			refused++
		}
	}
	if refused < 50 || refused > 250 {
		t.Errorf("%d of 300 trees changeable by uid 1000: the generator tests too little of one side", refused)
	}
	if err := CheckTree(t.TempDir(), "missing", nil); err != nil {
		t.Errorf("a missing tree: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestOpenRegular: links root owns are followed to the file (relative and
// absolute, a chain of two), a link uid 1000 owns is refused (LinkError,
// whatever it leads to), a FIFO is refused without waiting.
func TestOpenRegular(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test needs root (CI runs as root) to make uid 1000's links")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "pkg"), []byte("archive"), 0o600)
	os.Symlink("pkg", filepath.Join(dir, "rel"))
	os.Symlink(filepath.Join(dir, "rel"), filepath.Join(dir, "abs"))
	f, err := OpenRegular(filepath.Join(dir, "abs"))
	if err != nil {
		t.Fatalf("root's links: %v", err)
	}
	b := make([]byte, 7)
	f.Read(b)
	f.Close()
	if string(b) != "archive" {
		t.Errorf("read %q through root's links", b)
	}
	os.Symlink("pkg", filepath.Join(dir, "users"))
	os.Lchown(filepath.Join(dir, "users"), 1000, 1000)
	var le *LinkError
	if _, err := OpenRegular(filepath.Join(dir, "users")); !errors.As(err, &le) || le.Owner != 1000 {
		t.Errorf("uid 1000's link: %v", err)
	}
	os.Symlink("users", filepath.Join(dir, "via"))
	if _, err := OpenRegular(filepath.Join(dir, "via")); !errors.As(err, &le) {
		t.Errorf("root's link to uid 1000's link: %v", err)
	}
	syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o666)
	var nr *NotRegularError
	if _, err := OpenRegular(filepath.Join(dir, "fifo")); !errors.As(err, &nr) {
		t.Errorf("a FIFO: %v", err)
	}
}
