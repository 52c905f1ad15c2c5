package main

import (
	"bytes"
	"fmt"
	"io/fs"
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

// userVolume is a root-only dir holding a 0600 file and a 0700 dir (what
// root must never change through a user's link) and a volume owned by
// uid 1000, as an image's user owns its data volume.
func userVolume(t *testing.T) (outside, vol string) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Fatal("this test needs root (CI runs as root) to act for uid 1000")
	}
	base := openDir(t)
	outside = filepath.Join(base, "outside")
	os.Mkdir(outside, 0o700)
	os.WriteFile(filepath.Join(outside, "secret"), []byte("root only\n"), 0o600)
	os.Mkdir(filepath.Join(outside, "private"), 0o700)
	vol = filepath.Join(base, "vol")
	os.Mkdir(vol, 0o755)
	if err := os.Chown(vol, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	return outside, vol
}

// treeState lists every name under dir with its mode, owner and content.
func treeState(dir string) string {
	var lines []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, _ := os.Lstat(p)
		line := fmt.Sprintf("%s %v %d", p, fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid)
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			line += fmt.Sprintf(" %q", b)
		}
		lines = append(lines, line)
		return nil
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// runWithin runs llamaboot, killing it after timeout (hung reports it).
func runWithin(t *testing.T, timeout time.Duration, env []string, args ...string) (r result, hung bool) {
	t.Helper()
	cmd := exec.Command(llamaboot, args...)
	cmd.Env = cleanEnv(env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(timeout, func() { hung = true; cmd.Process.Kill() })
	err := cmd.Wait()
	timer.Stop()
	r = result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	}
	return r, hung
}

// TestRootNeverFollowsUserLinks: models go to a volume uid 1000 owns. A dir
// link it planted there (to a root-only dir) is refused with exit 2, the
// link and its owner named; and while it swaps the dirs root creates for
// links as fast as it can, 20 fetch-models runs change nothing outside the
// volume (the chmod by path once turned a 0700 dir 0755 within 1–3 runs,
// and the model, its lock and marker landed in the root-only dir).
func TestRootNeverFollowsUserLinks(t *testing.T) {
	outside, vol := userVolume(t)
	before := treeState(outside)
	body := ggufBody(20_000, 3)
	srv := newGatedServer(t, map[string][]byte{"/m.gguf": body})
	close(srv.open)
	srv.hits["/m.gguf"] = 1 // serve whole from the first request
	cfg := writeFile(t, filepath.Join(t.TempDir(), "cfg.toml"), fmt.Sprintf("[instance.a.server]\nport = 1\nmodel = %q\n", srv.URL+"/m.gguf"))

	link := filepath.Join(vol, "models")
	os.Symlink(filepath.Join(outside, "private"), link)
	os.Lchown(link, 1000, 1000)
	r := runLB(t, []string{"AUTO_INFER_MODELS_DIR=" + filepath.Join(link, "sub")}, "fetch-models", "--config", cfg)
	if want := link + " is a symbolic link owned by uid 1000"; r.code != 2 || !strings.Contains(r.stderr, want) {
		t.Errorf("want exit 2 and %q: %v", want, r)
	}
	if after := treeState(outside); after != before {
		t.Fatalf("a planted link made root write outside the volume:\n%s\nwas\n%s", after, before)
	}
	os.Remove(link)

	sw := exec.Command(swapper, vol, filepath.Join(outside, "private")+":"+outside, "a:b", "2")
	sw.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
	sw.Dir = "/"
	stdin, _ := sw.StdinPipe()
	if err := sw.Start(); err != nil {
		t.Fatal(err)
	}
	defer sw.Wait()
	defer stdin.Close()
	models := filepath.Join(vol, "a", "b")
	codes := map[int]int{}
	for range 20 {
		os.RemoveAll(filepath.Join(vol, "a.swap"))
		os.RemoveAll(filepath.Join(vol, "a"))
		r := runLB(t, []string{"AUTO_INFER_MODELS_DIR=" + models}, "fetch-models", "--config", cfg)
		codes[r.code]++
		if r.code != 0 && r.code != 2 && r.code != 1 {
			t.Errorf("exit %d: %v", r.code, r)
		}
	}
	stdin.Close()
	sw.Wait()
	if after := treeState(outside); after != before {
		t.Errorf("root changed what is outside the volume while uid 1000 swapped its dirs:\n%s\nwas\n%s", after, before)
	}
	t.Logf("exit codes of 20 runs under the swapper: %v", codes)
}

// TestModelSideFilesCannotHangOrBloat: what uid 1000 (or anyone) can plant
// beside a model — a FIFO at the .part, the .part.json or the marker's old
// temp name, a .part.json linked to /dev/zero — neither blocks fetch-models
// (it once waited forever in open) nor makes it read without bound (RSS
// grew 0.6 GB/s). A FIFO at a file it must write is named (exit 2); a link
// is replaced; each run ends within seconds.
func TestModelSideFilesCannotHangOrBloat(t *testing.T) {
	dir := t.TempDir()
	models := filepath.Join(dir, "models")
	body := ggufBody(20_000, 5)
	srv := newGatedServer(t, map[string][]byte{"/m.gguf": body})
	close(srv.open)
	srv.hits["/m.gguf"] = 1
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[instance.a.server]\nport = 1\nmodel = %q\n", srv.URL+"/m.gguf"))
	env := []string{"AUTO_INFER_MODELS_DIR=" + models}
	fifo := func(name string) func() error {
		return func() error { return syscall.Mkfifo(filepath.Join(models, name), 0o666) }
	}
	for _, c := range []struct {
		name  string
		plant func() error
		code  int
		want  string
	}{
		{"FIFO at .part", fifo("m.gguf.part"), 2, filepath.Join(models, "m.gguf.part") + " is a FIFO, not a regular file"},
		{"FIFO at .part.json", fifo("m.gguf.part.json"), 2, filepath.Join(models, "m.gguf.part.json") + " is a FIFO, not a regular file"},
		{"FIFO at the marker's old temp name", fifo(".m.gguf.llamaboot.json.tmp"), 0, "downloaded model"},
		{".part.json linked to /dev/zero", func() error { return os.Symlink("/dev/zero", filepath.Join(models, "m.gguf.part.json")) }, 0, "downloaded model"},
		{".part hard-linked to a root file", func() error {
			os.WriteFile(filepath.Join(dir, "root-file"), []byte("root's\n"), 0o600)
			return os.Link(filepath.Join(dir, "root-file"), filepath.Join(models, "m.gguf.part"))
		}, 2, "has other hard links"},
	} {
		os.RemoveAll(models)
		os.MkdirAll(models, 0o755)
		if err := c.plant(); err != nil {
			t.Fatal(err)
		}
		r, hung := runWithin(t, 20*time.Second, env, "fetch-models", "--config", cfg)
		if hung {
			t.Errorf("%s: fetch-models still running after 20s: %v", c.name, r)
			continue
		}
		if r.code != c.code || !strings.Contains(r.stdout+r.stderr, c.want) {
			t.Errorf("%s: want exit %d and %q: %v", c.name, c.code, c.want, r)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "root-file")); string(b) != "root's\n" {
		t.Errorf("a file hard-linked at .part was written: %q", b)
	}
}

// TestModelLockHeldIsNamed: a lock held by someone else (a user's own
// flock on the lock file) is waited for no longer than --lock-timeout
// while nothing progresses, then named with its holder (exit 1); SIGTERM
// ends the wait at once.
func TestModelLockHeldIsNamed(t *testing.T) {
	dir := t.TempDir()
	models := filepath.Join(dir, "models")
	os.MkdirAll(models, 0o755)
	srv := newGatedServer(t, map[string][]byte{"/m.gguf": ggufBody(1000, 1)})
	close(srv.open)
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[instance.a.server]\nport = 1\nmodel = %q\n", srv.URL+"/m.gguf"))
	env := []string{"AUTO_INFER_MODELS_DIR=" + models}
	holder := exec.Command("flock", filepath.Join(models, ".m.gguf.llamaboot.lock"), "sleep", "60")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Wait()
	defer holder.Process.Kill()
	waitFor(t, "the holder's flock", 10*time.Second, func() bool {
		b, _ := os.ReadFile("/proc/locks")
		return bytes.Contains(b, []byte(" "+strconv.Itoa(holder.Process.Pid)+" "))
	})
	start := time.Now()
	r, hung := runWithin(t, 30*time.Second, env, "fetch-models", "--config", cfg, "--lock-timeout", "1s")
	if hung || r.code != 1 || !strings.Contains(r.stderr, "gave up after") || !strings.Contains(r.stderr, "held by pid "+strconv.Itoa(holder.Process.Pid)) {
		t.Errorf("want exit 1 naming the holder within seconds: hung=%v %v", hung, r)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("took %s with --lock-timeout 1s", d)
	}

	cmd := exec.Command(llamaboot, "fetch-models", "--config", cfg)
	cmd.Env = cleanEnv(env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "fetch-models waiting for the lock", 15*time.Second, func() bool { return strings.Contains(out.String(), "waiting for it") })
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Errorf("SIGTERM did not end the wait for the lock:\n%s", out.String())
	}
}

// TestAppDirUnderAUserDirRefused: the install works in the app dir by path
// (staging, renames, the llama-cpp link), so an app dir under a directory
// uid 1000 owns (it could swap the app dir for a link meanwhile) is refused
// with exit 2, the directory and its owner named; nothing is written.
func TestAppDirUnderAUserDirRefused(t *testing.T) {
	_, vol := userVolume(t)
	pkg := releaseArchive(t, t.TempDir(), "llama-b7001-bin-ubuntu-x64.tar.gz", "b7001")
	app := filepath.Join(vol, "app")
	r := runLB(t, nil, "install", "--app-dir", app, pkg)
	if want := "lies in " + vol + ", owned by uid 1000"; r.code != 2 || !strings.Contains(r.stderr, want) {
		t.Errorf("want exit 2 and %q: %v", want, r)
	}
	if _, err := os.Lstat(app); err == nil {
		t.Error("the app dir was created")
	}
}

// TestStateFileFIFODoesNotHangBoot: entry reads its record of what a
// previous supervisor ran at boot; a FIFO there once blocked the read (and
// the boot) forever. It is passed over: the boot goes on.
func TestStateFileFIFODoesNotHangBoot(t *testing.T) {
	app := filepath.Join(t.TempDir(), "app")
	os.MkdirAll(app, 0o755)
	if err := syscall.Mkfifo(filepath.Join(app, ".llamaboot-supervised.json"), 0o666); err != nil {
		t.Fatal(err)
	}
	e := startEntry(t, app, nil, "--", "true")
	if code := e.wait(t, 20*time.Second); code != 0 {
		t.Errorf("exit %d\n%s", code, e.out.String())
	}
}
