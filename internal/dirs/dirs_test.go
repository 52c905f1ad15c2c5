package dirs

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestModeIndependentOfUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	base := t.TempDir()
	if err := os.Chmod(base, 0o711); err != nil {
		t.Fatal(err)
	}
	deep := filepath.Join(base, "a", "b", "c")
	if err := MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(base, "a"), filepath.Join(base, "a", "b"), deep} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v %v", p, fi.Mode(), err)
		}
	}
	if fi, _ := os.Stat(base); fi.Mode().Perm() != 0o711 {
		t.Errorf("an existing dir was changed: %v", fi.Mode())
	}
}

// user is the less-privileged user of the tests: uid 1000, as a volume
// owned by the image's user would be.
const user = 1000

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (CI runs as root): it plants links owned by uid 1000")
	}
}

// layout is a root-only dir with a 0600 file and a 0700 dir (what root
// must never change through a user's link), and a volume owned by uid 1000.
func layout(t *testing.T) (outside, vol string) {
	t.Helper()
	base := t.TempDir()
	os.Chmod(base, 0o755)
	outside = filepath.Join(base, "outside")
	os.Mkdir(outside, 0o700)
	os.WriteFile(filepath.Join(outside, "secret"), []byte("root only\n"), 0o600)
	os.Mkdir(filepath.Join(outside, "private"), 0o700)
	os.WriteFile(filepath.Join(outside, "private", "key"), []byte("k\n"), 0o600)
	vol = filepath.Join(base, "vol")
	os.Mkdir(vol, 0o755)
	if err := os.Chown(vol, user, user); err != nil {
		t.Fatal(err)
	}
	return outside, vol
}

// userLink plants a link owned by uid 1000.
func userLink(t *testing.T, target, at string) {
	t.Helper()
	if err := os.Symlink(target, at); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(at, user, user); err != nil {
		t.Fatal(err)
	}
}

// snapshot lists every name under dir with its type, mode, owner and
// content, to compare before and after.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			lines = append(lines, p+" "+err.Error())
			return nil
		}
		fi, _ := os.Lstat(p)
		st := fi.Sys().(*syscall.Stat_t)
		line := fmt.Sprintf("%s %v %d", p, fi.Mode(), st.Uid)
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			line += " " + string(b)
		}
		lines = append(lines, line)
		return nil
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestUserLinkOnTheWayRefused: a dir link uid 1000 planted in its volume
// (to a root-only dir) is refused with its name and owner, for creating,
// opening and writing; nothing is created or changed where it points.
func TestUserLinkOnTheWayRefused(t *testing.T) {
	needRoot(t)
	outside, vol := layout(t)
	before := snapshot(t, outside)
	userLink(t, filepath.Join(outside, "private"), filepath.Join(vol, "models"))
	for name, op := range map[string]func() error{
		"Make":                    func() error { return MkdirAll(filepath.Join(vol, "models", "new"), 0o755) },
		"Make of the link itself": func() error { return MkdirAll(filepath.Join(vol, "models"), 0o755) },
		"Open":                    func() error { _, err := Open(filepath.Join(vol, "models")); return err },
		"OpenFile": func() error {
			d, n, err := OpenParent(filepath.Join(vol, "models", "key"), false, 0)
			if err == nil {
				_, err = d.OpenFile(n, os.O_WRONLY|os.O_TRUNC, 0o644)
			}
			return err
		},
	} {
		err := op()
		var le *LinkError
		if !errors.As(err, &le) || le.Path != filepath.Join(vol, "models") || le.Owner != user {
			t.Errorf("%s: %v, want a LinkError naming %s/models and uid %d", name, err, vol, user)
		} else if !strings.Contains(err.Error(), "owned by uid 1000") {
			t.Errorf("%s: message %q does not name the owner", name, err)
		}
	}
	if after := snapshot(t, outside); after != before {
		t.Errorf("outside changed:\n%s\nwas\n%s", after, before)
	}
}

// TestOwnLinksFollowed: links root owns (an image's /var/run -> /run) are
// followed, relative ones and .. included.
func TestOwnLinksFollowed(t *testing.T) {
	base := t.TempDir()
	os.MkdirAll(filepath.Join(base, "real", "logs"), 0o755)
	os.Symlink("real/logs", filepath.Join(base, "logs"))
	os.Symlink("../real", filepath.Join(base, "real", "up"))
	for _, p := range []string{filepath.Join(base, "logs", "a"), filepath.Join(base, "real", "up", "logs", "b")} {
		if err := MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"a", "b"} {
		if fi, err := os.Lstat(filepath.Join(base, "real", "logs", n)); err != nil || !fi.IsDir() {
			t.Errorf("%s not created through root's links: %v", n, err)
		}
	}
}

// TestSideFilesRegularOnly: a FIFO is refused at once (never waited on),
// a link at the name is not followed, a file with another hard link is not
// written (truncating it would truncate the other name's file).
func TestSideFilesRegularOnly(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("keep\n"), 0o600)
	syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o666)
	os.Symlink(secret, filepath.Join(dir, "link"))
	os.Link(secret, filepath.Join(dir, "hard"))
	d, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, c := range []struct {
			name string
			flag int
		}{{"fifo", os.O_RDONLY}, {"fifo", os.O_WRONLY}, {"link", os.O_RDONLY}, {"link", os.O_WRONLY | os.O_CREATE}, {"hard", os.O_WRONLY | os.O_TRUNC}} {
			f, err := d.OpenFile(c.name, c.flag, 0o644)
			if err == nil {
				f.Close()
				t.Errorf("%s (flags %#x) was opened", c.name, c.flag)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("an open waited on a FIFO")
	}
	if b, _ := os.ReadFile(secret); string(b) != "keep\n" {
		t.Errorf("secret now %q", b)
	}
}

// TestRaceProperty is the property behind "root never follows a user's
// links": random trees of dirs and links owned by uid 1000 in its volume,
// while a process running as uid 1000 swaps dirs for links to a root-only
// dir and back as fast as it can; root creates dirs, writes files and sets
// modes in the volume all the while. Nothing outside the volume may change
// (the chmod race once turned a 0700 dir 0755; a planted link once made
// root write into it).
func TestRaceProperty(t *testing.T) {
	needRoot(t)
	swapper := buildSwapper(t)
	rounds := 16
	if testing.Short() {
		rounds = 5
	}
	names := []string{"a", "b", "models", "logs"}
	for round := range rounds {
		rng := rand.New(rand.NewPCG(uint64(round), 19))
		outside, vol := layout(t)
		targets := []string{filepath.Join(outside, "private"), filepath.Join(outside, "secret"), outside}
		// A random tree, all of it uid 1000's.
		for range 12 {
			p := vol
			for range 1 + rng.IntN(3) {
				p = filepath.Join(p, names[rng.IntN(len(names))])
			}
			os.MkdirAll(filepath.Dir(p), 0o755)
			// Odd rounds plant links; even ones leave it all to the race.
			if round%2 == 1 && rng.IntN(3) == 0 {
				os.Symlink(targets[rng.IntN(len(targets))], p)
			} else {
				os.Mkdir(p, 0o755)
			}
		}
		filepath.WalkDir(vol, func(p string, _ fs.DirEntry, _ error) error { os.Lchown(p, user, user); return nil })
		before := snapshot(t, outside)

		cmd := exec.Command(swapper, vol, strings.Join(targets, ":"), strings.Join(names, ":"), "4")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: user, Gid: user}}
		cmd.Dir = "/"
		stdin, _ := cmd.StdinPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for i := range 150 {
			p := vol
			for range 1 + rng.IntN(4) {
				p = filepath.Join(p, names[rng.IntN(len(names))])
			}
			d, err := Make(p, 0o755)
			if err != nil {
				continue // refused: the property is about what root did not do
			}
			if f, err := d.OpenFile("f"+strconv.Itoa(i), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644); err == nil {
				f.WriteString("written by root\n")
				f.Close()
			}
			d.Close()
		}
		stdin.Close()
		cmd.Wait()
		if after := snapshot(t, outside); after != before {
			t.Fatalf("round %d: outside changed:\n%s\nwas\n%s", round, after, before)
		}
	}
}

// buildSwapper builds internal/testutil/swapper where uid 1000 can run it.
func buildSwapper(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	out := filepath.Join(dir, "swapper")
	cmd := exec.Command("go", "build", "-o", out, "../testutil/swapper")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the swapper: %v\n%s", err, b)
	}
	return out
}

// TestCheckPath: a path under a directory another user owns, or under one
// anyone can write without the sticky bit, is refused naming that
// directory; root's own dirs, /tmp's sticky bit and group-writable dirs
// pass.
func TestCheckPath(t *testing.T) {
	needRoot(t)
	_, vol := layout(t)
	base := filepath.Dir(vol)
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	sticky := filepath.Join(base, "sticky")
	os.Mkdir(sticky, 0o1777)
	os.Chmod(sticky, 0o777|os.ModeSticky)
	group := filepath.Join(base, "group")
	os.Mkdir(group, 0o2775)
	os.Chmod(group, 0o2775)
	for _, c := range []struct {
		path, dir string
		owner     int
	}{
		{filepath.Join(vol, "app"), vol, user},
		{filepath.Join(vol, "a", "b", "app"), vol, user},
		{filepath.Join(open, "app"), open, 0},
		{filepath.Join(sticky, "app"), "", 0},
		{filepath.Join(group, "app"), "", 0},
		{filepath.Join(base, "app"), "", 0},
	} {
		err := CheckPath(c.path)
		var ce *ChangeableError
		switch {
		case c.dir == "" && err != nil:
			t.Errorf("%s: %v", c.path, err)
		case c.dir != "" && (!errors.As(err, &ce) || ce.Dir != c.dir || ce.Owner != c.owner):
			t.Errorf("%s: %v, want %s named", c.path, err, c.dir)
		}
	}
	// A link on the way is judged where it leads.
	os.Symlink(vol, filepath.Join(base, "link"))
	if err := CheckPath(filepath.Join(base, "link", "app")); err == nil || !strings.Contains(err.Error(), "owned by uid 1000") {
		t.Errorf("through a link: %v", err)
	}
}
