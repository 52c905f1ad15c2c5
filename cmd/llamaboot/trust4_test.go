package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
	"github.com/llamaboot/llamaboot/internal/imagegen"
	"github.com/llamaboot/llamaboot/internal/testutil"
)

// trickleServer sends body 10 bytes every 50ms (about 200 B/s), however
// fast the client reads.
func trickleServer(t *testing.T, body []byte) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		for i := 0; i < len(body); i += 10 {
			if _, err := w.Write(body[i:min(i+10, len(body))]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestMinRateFlag: the download rate floor was fixed at 1 KiB/s per
// --stall-timeout window; --min-rate sets it. A 200 B/s server is cut off
// by the default floor (exit 1, the floor and its flag named), and served
// whole with --min-rate 20 (a tenth of its rate) or 0 (any byte will do).
func TestMinRateFlag(t *testing.T) {
	dir := t.TempDir()
	body := ggufBody(1000, 9)
	srv := trickleServer(t, body)
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[instance.a.server]\nport = 1\nmodel = %q\n", srv.URL+"/m.gguf"))
	for _, c := range []struct {
		rate string // "" for the default
		code int
		want string
	}{
		{"", 1, "(under 1.0 KiB/s, the --min-rate floor)"},
		{"20", 0, "downloaded model"},
		{"0", 0, "downloaded model"},
	} {
		models := filepath.Join(dir, "models-"+c.rate)
		args := []string{"fetch-models", "--config", cfg, "--stall-timeout", "1s", "--retries", "0"}
		if c.rate != "" {
			args = append(args, "--min-rate", c.rate)
		}
		r := runLB(t, []string{"AUTO_INFER_MODELS_DIR=" + models}, args...)
		if r.code != c.code || !strings.Contains(r.stdout+r.stderr, c.want) {
			t.Errorf("--min-rate %q: want exit %d and %q: %v", c.rate, c.code, c.want, r)
			continue
		}
		if got, _ := os.ReadFile(filepath.Join(models, "m.gguf")); c.code == 0 && string(got) != string(body) {
			t.Errorf("--min-rate %q: the model holds %d bytes, not the %d served", c.rate, len(got), len(body))
		}
	}
}

// TestModelHashNeverFollowsASwappedLink: a model without a marker is
// hashed against its pin before it is reused; the hash opened it by path
// after look() had checked it. uid 1000, who owns the models dir, swaps
// the model for a link to a root-only file whose digest is the pin and
// back, every tenth of a millisecond or so: root never vouches for the root-only
// file (no "matches", no marker) in 300 runs, and never changes it.
func TestModelHashNeverFollowsASwappedLink(t *testing.T) {
	outside, vol := userVolume(t)
	secret := filepath.Join(outside, "secret")
	pin := sha(mustRead(t, secret))
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	models := filepath.Join(vol, "models")
	os.Mkdir(models, 0o755)
	os.Chown(models, 1000, 1000)
	model := filepath.Join(models, "m.gguf")
	os.WriteFile(model, ggufBody(5000, 4), 0o644)
	os.Chown(model, 1000, 1000)
	cfg := writeFile(t, filepath.Join(t.TempDir(), "cfg.toml"), fmt.Sprintf("[instance.a.server]\nport = 1\nmodel = %q\nmodel_sha256 = %q\n", srv.URL+"/m.gguf", pin))
	before := treeState(outside)

	sw := exec.Command(swapper, models, secret, "m.gguf", "1")
	sw.Env = []string{"SWAPPER_FILES=1"}
	sw.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
	sw.Dir = "/"
	stdin, _ := sw.StdinPipe()
	if err := sw.Start(); err != nil {
		t.Fatal(err)
	}
	defer sw.Wait()
	defer stdin.Close()
	codes := map[int]int{}
	for range 300 {
		r := runLB(t, []string{"AUTO_INFER_MODELS_DIR=" + models}, "fetch-models", "--config", cfg, "--retries", "0")
		codes[r.code]++
		if strings.Contains(r.stdout, "matches its pinned sha256") || r.code == 0 {
			t.Errorf("root vouched for the root-only file a swapped link led to: %v", r)
			break
		}
	}
	stdin.Close()
	sw.Wait()
	if m, _ := filepath.Glob(filepath.Join(models, ".m.gguf.llamaboot.json*")); len(m) > 0 {
		t.Errorf("a marker vouches for the model: %v", m)
	}
	if after := treeState(outside); after != before {
		t.Errorf("root changed the root-only dir:\n%s\nwas\n%s", after, before)
	}
	t.Logf("exit codes of 300 runs under the swapper: %v", codes)
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMaxBytesCountsWhatIsWritten: --max-bytes bounds the disk an install
// takes, so 256 MiB of zeros in one member (left as holes, nothing
// written) passes a 100 MiB --max-bytes — it was refused, its length
// counted in full — and takes no disk; its length counts against
// --max-expanded, which refuses it at 200 MiB with exit 2 naming the flag.
func TestMaxBytesCountsWhatIsWritten(t *testing.T) {
	dir := t.TempDir()
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	tw := tar.NewWriter(gz)
	tw.WriteHeader(&tar.Header{Name: "llama-b7001/llama-server", Typeflag: tar.TypeReg, Mode: 0o755, Size: 2})
	tw.Write([]byte("x\n"))
	tw.WriteHeader(&tar.Header{Name: "llama-b7001/zeros.bin", Typeflag: tar.TypeReg, Mode: 0o644, Size: 256 << 20})
	zero := make([]byte, 1<<20)
	for range 256 {
		tw.Write(zero)
	}
	tw.Close()
	gz.Close()
	pkg := filepath.Join(dir, "llama-b7001-bin-ubuntu-x64.tar.gz")
	os.WriteFile(pkg, buf.Bytes(), 0o644)

	app := filepath.Join(dir, "app")
	r := runLB(t, nil, "install", "--app-dir", app, "--max-bytes", "100MiB", pkg)
	if r.code != 0 {
		t.Fatalf("256 MiB of holes under a 100 MiB --max-bytes: %v", r)
	}
	fi, err := os.Stat(filepath.Join(app, "llama-cpp", "bin", "zeros.bin"))
	if err != nil || fi.Size() != 256<<20 || fi.Sys().(*syscall.Stat_t).Blocks*512 > 1<<20 {
		t.Errorf("zeros.bin should be 256 MiB long and take no disk: %v %v", fi, err)
	}
	r = runLB(t, nil, "install", "--app-dir", filepath.Join(dir, "app2"), "--max-bytes", "100MiB", "--max-expanded", "200MiB", pkg)
	if want := `"llama-b7001/zeros.bin": expands past 200MiB, holes included (--max-expanded`; r.code != 2 || !strings.Contains(r.stderr, want) {
		t.Errorf("want exit 2 and %q: %v", want, r)
	}
}

// TestNonRootSocketCannotBeSquatted: a non-root supervisor whose app dir
// path is too long for a socket address kept its socket in
// $TMPDIR/llamaboot-<uid>, which any user could make first: the
// supervisor then had no socket, and status and the healthcheck failed for
// good. Now the socket lives in the app dir whatever its length: with that
// name squatted by uid 1001, uid 1000's supervisor still answers status
// and healthcheck, root's status finds the same socket, and nothing is
// made in the temp dir.
func TestNonRootSocketCannotBeSquatted(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test needs root (CI runs as root) to act as other users")
	}
	base := openDir(t)
	tmp := filepath.Join(base, "tmp")
	os.Mkdir(tmp, 0o1777)
	os.Chmod(tmp, 0o1777)
	squat := filepath.Join(tmp, "llamaboot-1000")
	os.Mkdir(squat, 0o777)
	os.Chown(squat, 1001, 1001)
	app := filepath.Join(base, strings.Repeat("deep/", 25), "app")
	os.MkdirAll(app, 0o755)
	for d := app; d != base; d = filepath.Dir(d) {
		os.Chown(d, 1000, 0)
	}
	env := []string{"TMPDIR=" + tmp, "AUTO_INFER_APP_DIR=" + app}
	cmd := exec.Command(llamaboot, "entry", "--app-dir", app, "--", "sleep", "120")
	cmd.Env = cleanEnv(env...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: asUser1000}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	var r result
	waitFor(t, "uid 1000's supervisor to answer status", 20*time.Second, func() bool {
		r = runAs(t, asUser1000, env, "status")
		return strings.Contains(r.stdout, "supervisor: pid ") || strings.Contains(out.String(), "status socket unavailable")
	})
	if !strings.Contains(r.stdout, "supervisor: pid ") || strings.Contains(out.String(), "status socket unavailable") {
		t.Errorf("status: %v\nentry:\n%s", r, out.String())
	}
	if h := runAs(t, asUser1000, env, "healthcheck"); h.code != 0 {
		t.Errorf("healthcheck: %v", h)
	}
	// Root's clients look in the same place (they looked under /run) and
	// find uid 1000's supervisor, which they do not talk to.
	if r := runLB(t, env, "status"); !strings.Contains(r.stderr, filepath.Join(app, ".llamaboot.sock")+" is served by uid 1000") {
		t.Errorf("root's status: %v", r)
	}
	if left, _ := os.ReadDir(squat); len(left) != 0 {
		t.Errorf("the squatted dir was used: %v", left)
	}
}

// TestAppDirTreeChangedByAUser: the app dir passing the check on its own
// path covered the names in it, not what lies below: a versions dir, a
// bundle or its bin/ chowned to uid 1000, a cache opened to anyone, the
// llama-server root runs chowned to uid 1000 or a library anyone can
// write, a link uid 1000 owns in a bundle, or a legacy llama-cpp dir it owns let it swap
// a staging dir, a bundle or the executable root runs, and the install
// went on (and a second boot, finding the bundle installed, ran it as
// root). Each is refused now with exit 2 naming the directory (or link)
// and its owner, installing or already installed; the active bundle stays.
func TestAppDirTreeChangedByAUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test needs root (CI runs as root) to act for uid 1000")
	}
	dir := openDir(t)
	app := filepath.Join(dir, "app")
	first := releaseArchive(t, dir, "llama-b7001-bin-ubuntu-x64.tar.gz", "b7001")
	if r := runLB(t, nil, "install", "--app-dir", app, first); r.code != 0 {
		t.Fatal(r)
	}
	next := releaseArchive(t, dir, "llama-b7002-bin-ubuntu-x64.tar.gz", "b7002")
	active, _ := os.Readlink(filepath.Join(app, "llama-cpp"))
	bundle := filepath.Join(app, active)
	chown := func(p string) func() { os.Lchown(p, 1000, 1000); return func() { os.Lchown(p, 0, 0) } }
	for _, c := range []struct {
		name   string
		change func() (undo func())
		want   string
	}{
		{"versions dir chowned", func() func() { return chown(filepath.Join(app, "llama-cpp.versions")) },
			"holds the directory " + filepath.Join(app, "llama-cpp.versions") + ", owned by uid 1000"},
		{"active bundle chowned", func() func() { return chown(bundle) }, "holds the directory " + bundle + ", owned by uid 1000"},
		{"its bin chowned", func() func() { return chown(filepath.Join(bundle, "bin")) }, "holds the directory " + filepath.Join(bundle, "bin") + ", owned by uid 1000"},
		{"cache open to anyone", func() func() {
			os.Chmod(filepath.Join(app, "cache"), 0o777)
			return func() { os.Chmod(filepath.Join(app, "cache"), 0o755) }
		}, "holds the directory " + filepath.Join(app, "cache") + ", writable by anyone (mode -rwxrwxrwx, no sticky bit)"},
		{"its llama-server chowned", func() func() { return chown(filepath.Join(bundle, "bin", "llama-server")) },
			"holds the file " + filepath.Join(bundle, "bin", "llama-server") + ", owned by uid 1000"},
		{"a library open to anyone", func() func() {
			lib := filepath.Join(bundle, "bin", "libplanted.so")
			os.WriteFile(lib, []byte("lib"), 0o644)
			os.Chmod(lib, 0o666)
			return func() { os.Remove(lib) }
		}, "holds the file " + filepath.Join(bundle, "bin", "libplanted.so") + ", writable by anyone (mode -rw-rw-rw-)"},
		{"a user's link in a bundle", func() func() {
			l := filepath.Join(bundle, "bin", "planted")
			os.Symlink("/etc", l)
			os.Lchown(l, 1000, 1000)
			return func() { os.Remove(l) }
		}, "holds the symbolic link " + filepath.Join(bundle, "bin", "planted") + ", owned by uid 1000"},
	} {
		undo := c.change()
		r := runLB(t, nil, "install", "--app-dir", app, next)
		// The same bundle again writes nothing, but root runs it next.
		again := runLB(t, nil, "install", "--app-dir", app, first)
		undo()
		if r.code != 2 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: want exit 2 and %q: %v", c.name, c.want, r)
		}
		if again.code != 2 || !strings.Contains(again.stderr, c.want) {
			t.Errorf("%s, the installed bundle again: want exit 2 and %q: %v", c.name, c.want, again)
		}
		if now, _ := os.Readlink(filepath.Join(app, "llama-cpp")); now != active {
			t.Errorf("%s: the active bundle changed to %s", c.name, now)
		}
	}

	// A legacy llama-cpp dir (from the old scripts, or baked into an
	// image) that uid 1000 owns: it was copied by path as root.
	legacy := filepath.Join(dir, "legacy")
	os.MkdirAll(filepath.Join(legacy, "llama-cpp", "bin"), 0o755)
	os.WriteFile(filepath.Join(legacy, "llama-cpp", "bin", "llama-server"), []byte("#!/bin/sh\n"), 0o755)
	os.Chown(filepath.Join(legacy, "llama-cpp", "bin"), 1000, 1000)
	r := runLB(t, nil, "install", "--app-dir", legacy, next)
	if want := "holds the directory " + filepath.Join(legacy, "llama-cpp", "bin") + ", owned by uid 1000"; r.code != 2 || !strings.Contains(r.stderr, want) {
		t.Errorf("legacy dir: want exit 2 and %q: %v", want, r)
	}
	if r := runLB(t, nil, "install", "--app-dir", app, next); r.code != 0 {
		t.Errorf("with every change undone: %v", r)
	}
}

// TestInstallLockClosedToOthers: flock needs only an open descriptor, and
// the install lock was made 0644: any user could open it and hold it, and
// root's next install waited --lock-timeout and failed. It is 0660 now
// (the group is the administrator's), so uid 1000 (not in the group)
// cannot open it, and the install goes on.
func TestInstallLockClosedToOthers(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test needs root (CI runs as root) to act as uid 1000")
	}
	dir := openDir(t)
	app := filepath.Join(dir, "app")
	if r := runLB(t, nil, "install", "--app-dir", app, releaseArchive(t, dir, "llama-b7001-bin-ubuntu-x64.tar.gz", "b7001")); r.code != 0 {
		t.Fatal(r)
	}
	lock := filepath.Join(app, ".llamaboot-install.lock")
	if fi, err := os.Stat(lock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("install lock %v %v, want 0660", fi, err)
	}
	holder := exec.Command("flock", "-n", lock, "-c", "echo locked; exec sleep 60")
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: &syscall.Credential{Uid: 1000, Gid: 1000, Groups: []uint32{}}}
	holder.Dir = "/"
	hout := &testutil.SyncBuffer{}
	holder.Stdout, holder.Stderr = hout, hout
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { holder.Wait(); close(exited) }()
	defer func() { syscall.Kill(-holder.Process.Pid, syscall.SIGKILL); <-exited }() // flock and its sleep
	// It either fails to open the lock (exits) or says it holds it.
	waitFor(t, "uid 1000's flock to hold the lock or give up", 10*time.Second, func() bool {
		select {
		case <-exited:
			return true
		default:
			return strings.Contains(hout.String(), "locked")
		}
	})
	r := runLB(t, nil, "install", "--app-dir", app, "--lock-timeout", "2s", releaseArchive(t, dir, "llama-b7002-bin-ubuntu-x64.tar.gz", "b7002"))
	if r.code != 0 {
		t.Errorf("root's install with uid 1000 after its lock (%q): %v", hout.String(), r)
	}
}

// TestModelLockTrickleDoesNotHoldForever: a lock holder's download that
// grows is waited for — each growth started --lock-timeout again — so a
// user holding the lock in a dir it owns and adding a byte to the .part
// now and then kept root waiting for ever. Growth counts only at the
// --min-rate floor over a --lock-timeout window: 10 bytes a second against
// 1 KiB/s is given up on (exit 1, holder named) within seconds.
func TestModelLockTrickleDoesNotHoldForever(t *testing.T) {
	dir := t.TempDir()
	models := filepath.Join(dir, "models")
	os.MkdirAll(models, 0o755)
	srv := newGatedServer(t, map[string][]byte{"/m.gguf": ggufBody(1000, 1)})
	close(srv.open)
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[instance.a.server]\nport = 1\nmodel = %q\n", srv.URL+"/m.gguf"))
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
	part, err := os.Create(filepath.Join(models, "m.gguf.part"))
	if err != nil {
		t.Fatal(err)
	}
	defer part.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				part.Write([]byte("x"))
			}
		}
	}()
	r, hung := runWithin(t, 60*time.Second, []string{"AUTO_INFER_MODELS_DIR=" + models}, "fetch-models", "--config", cfg, "--lock-timeout", "1s")
	if hung || r.code != 1 || !strings.Contains(r.stderr, "gave up after") || !strings.Contains(r.stderr, "held by pid "+strconv.Itoa(holder.Process.Pid)) {
		t.Errorf("want exit 1 naming the holder: hung=%v %v", hung, r)
	}
}

// TestPackageLinkOfAUserRefused: the package was opened by its path,
// following any link: a link uid 1000 planted in its volume at the
// package's name, leading to a root-only archive, had root install that
// archive — its files readable by all in the bundle. Such a link is
// refused with exit 2 naming it and its owner; one root owns is followed.
func TestPackageLinkOfAUserRefused(t *testing.T) {
	outside, vol := userVolume(t)
	secret := releaseArchive(t, outside, "llama-b7003-bin-ubuntu-x64.tar.gz", "b7003")
	os.Chmod(secret, 0o600)
	link := filepath.Join(vol, "llama-b7003-bin-ubuntu-x64.tar.gz")
	os.Symlink(secret, link)
	os.Lchown(link, 1000, 1000)
	app := filepath.Join(openDir(t), "app")
	r := runLB(t, nil, "install", "--app-dir", app, link)
	if want := link + " is a symbolic link owned by uid 1000"; r.code != 2 || !strings.Contains(r.stderr, want) {
		t.Errorf("want exit 2 and %q: %v", want, r)
	}
	if _, err := os.Lstat(filepath.Join(app, "llama-cpp")); err == nil {
		t.Error("the root-only archive was installed")
	}
	os.Lchown(link, 0, 0)
	if r := runLB(t, nil, "install", "--app-dir", app, link); r.code != 0 {
		t.Errorf("a link root owns: %v", r)
	}
}

// TestImageArchiveLinkOfAUserRefused: a docker-archive (and an OCI layout
// dir) was opened by its path as the package once was: uid 1000's link at
// its name in its volume led root to a root-only image. Refused with exit
// 2, the link and its owner named.
func TestImageArchiveLinkOfAUserRefused(t *testing.T) {
	outside, vol := userVolume(t)
	top, err := imagegen.NewLayer(archive.Gzip, []bundlegen.Entry{bundlegen.Dir("app/"), {Name: "app/llama-server", Type: '0', Mode: 0o755, Body: []byte("x\n")}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := imagegen.Image("linux/"+runtime.GOARCH, nil, top)
	if err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(outside, "img.tar")
	if err := imagegen.WriteDockerArchive(secret, "llama:b1", img); err != nil {
		t.Fatal(err)
	}
	os.Chmod(secret, 0o600)
	layout := filepath.Join(outside, "layout")
	if err := imagegen.WriteLayout(layout, img, "b1"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ target, name, src string }{
		{secret, "img.tar", "docker-archive:"},
		{layout, "layout", "oci:"},
	} {
		link := filepath.Join(vol, c.name)
		os.Symlink(c.target, link)
		os.Lchown(link, 1000, 1000)
		app := filepath.Join(openDir(t), "app")
		r := runLB(t, []string{"DOCKER_CONFIG=" + t.TempDir()}, "install", "--app-dir", app, c.src+link)
		if want := link + " is a symbolic link owned by uid 1000"; r.code != 2 || !strings.Contains(r.stderr, want) {
			t.Errorf("%s: want exit 2 and %q: %v", c.src, want, r)
		}
		if _, err := os.Lstat(filepath.Join(app, "llama-cpp")); err == nil {
			t.Errorf("%s: the root-only image was installed", c.src)
		}
	}
}

// TestOCIBlobFIFODoesNotHang: a blob of an OCI layout dir was opened
// without O_NONBLOCK: a FIFO in its place (the dir may be a user's) held
// root in open for ever, SIGTERM or not. It is refused within seconds.
func TestOCIBlobFIFODoesNotHang(t *testing.T) {
	dir := t.TempDir()
	top, err := imagegen.NewLayer(archive.Gzip, []bundlegen.Entry{bundlegen.Dir("app/"), {Name: "app/llama-server", Type: '0', Mode: 0o755, Body: bytes.Repeat([]byte("x"), 100_000)}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := imagegen.Image("linux/"+runtime.GOARCH, nil, top)
	if err != nil {
		t.Fatal(err)
	}
	layout := filepath.Join(dir, "layout")
	if err := imagegen.WriteLayout(layout, img, "b1"); err != nil {
		t.Fatal(err)
	}
	// The layer is the largest blob.
	blobs, _ := filepath.Glob(filepath.Join(layout, "blobs", "sha256", "*"))
	var layer string
	var size int64
	for _, b := range blobs {
		if fi, err := os.Stat(b); err == nil && fi.Size() > size {
			layer, size = b, fi.Size()
		}
	}
	os.Remove(layer)
	if err := syscall.Mkfifo(layer, 0o666); err != nil {
		t.Fatal(err)
	}
	r, hung := runWithin(t, 20*time.Second, []string{"DOCKER_CONFIG=" + t.TempDir()}, "install", "--app-dir", filepath.Join(dir, "app"), "oci:"+layout)
	if hung || r.code == 0 || !strings.Contains(r.stderr, "not a regular file") {
		t.Errorf("want a refusal naming the FIFO within seconds: hung=%v %v", hung, r)
	}
}

// TestInstallLinkIntoAUserDirRefused: llama-cpp is llamaboot's link into
// its versions, but a link made elsewhere (root's, by hand or by an old
// layout) into a dir uid 1000 owns led root to run uid 1000's llama-server,
// and a marker copied there said "already installed". The target must be
// as closed to others as the app dir: exit 2 naming it and its owner.
func TestInstallLinkIntoAUserDirRefused(t *testing.T) {
	_, vol := userVolume(t)
	dir := openDir(t)
	app := filepath.Join(dir, "app")
	pkg := releaseArchive(t, dir, "llama-b7001-bin-ubuntu-x64.tar.gz", "b7001")
	if r := runLB(t, nil, "install", "--app-dir", app, pkg); r.code != 0 {
		t.Fatal(r)
	}
	// uid 1000's copy of the bundle, marker and all.
	theirs := filepath.Join(vol, "llama")
	if out, err := exec.Command("cp", "-a", filepath.Join(app, "llama-cpp")+"/.", theirs).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	exec.Command("chown", "-R", "1000:1000", theirs).Run()
	link := filepath.Join(app, "llama-cpp")
	os.Remove(link)
	os.Symlink(theirs, link)
	r := runLB(t, nil, "install", "--app-dir", app, pkg)
	if want := theirs + " lies in " + theirs + ", owned by uid 1000"; r.code != 2 || !strings.Contains(r.stderr, want) {
		t.Errorf("want exit 2 and %q: %v", want, r)
	}
}
