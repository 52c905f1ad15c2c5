package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
	"github.com/llamaboot/llamaboot/internal/testutil"
)

// TestInstallUnderUmask077: the dirs non-root users need are 0755 however
// restrictive the umask of the installing process.
func TestInstallUnderUmask077(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "deep", "app")
	pkg := releaseArchive(t, dir, "llama-b7003.tar.gz", "b7003")
	cmd := exec.Command("sh", "-c", `umask 077; exec "$@"`, "sh", llamaboot, "install", "--app-dir", app, pkg)
	cmd.Env = cleanEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	version, err := os.Readlink(filepath.Join(app, "llama-cpp"))
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]fs.FileMode{
		filepath.Join(dir, "deep"):                          0o755,
		app:                                                 0o755,
		filepath.Join(app, "cache"):                         0o755,
		filepath.Join(app, "llama-cpp.versions"):            0o755,
		filepath.Join(app, version):                         0o755,
		filepath.Join(app, version, "bin"):                  0o755,
		filepath.Join(app, version, "bin", "llama-server"):  0o755,
		filepath.Join(app, version, ".installed-from.json"): 0o644,
	} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (want %v) %v", p, fi.Mode().Perm(), want, err)
		}
	}
}

// TestSizeFlagsTakeUnits: --max-download 64GiB as the README writes it,
// defaults shown with units, a bad size refused with exit 2.
func TestSizeFlagsTakeUnits(t *testing.T) {
	dir := t.TempDir()
	pkg, _ := os.ReadFile(releaseArchive(t, dir, "llama-b7004.tar.gz", "b7004"))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(pkg))
	}))
	defer srv.Close()
	u := srv.URL + "/llama-b7004.tar.gz"
	if r := runLB(t, nil, "install", "--help"); !strings.Contains(r.stdout, "(default 64GiB)") || strings.Contains(r.stdout, "68719476736") {
		t.Errorf("help should show 64GiB:\n%s", r.stdout)
	}
	r := runLB(t, nil, "install", "--app-dir", filepath.Join(dir, "a"), "--max-download", "1KiB", u)
	if r.code != 2 || !strings.Contains(r.stderr, "over the 1.0 KiB download limit (raise --max-download)") {
		t.Errorf("1KiB limit: %v", r)
	}
	r = runLB(t, nil, "install", "--app-dir", filepath.Join(dir, "a"), "--max-download", "64GiB", "--max-bytes", "1.5GB", u)
	if r.code != 0 {
		t.Errorf("64GiB: %v", r)
	}
	r = runLB(t, nil, "install", "--app-dir", filepath.Join(dir, "a"), "--max-bytes", "12parsecs", u)
	if r.code != 2 || !strings.Contains(r.stderr, `"12parsecs" is not a size`) {
		t.Errorf("bad size: %v", r)
	}
}

// TestHelperNameDirectoryRefused: a directory where a helper link goes is
// refused (exit 2) and the old bundle stays.
func TestHelperNameDirectoryRefused(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	if r := runLB(t, nil, "install", "--app-dir", app, releaseArchive(t, dir, "old.tar.gz", "b1")); r.code != 0 {
		t.Fatal(r)
	}
	var buf bytes.Buffer
	bundle := append(bundlegen.BinLayout("", []byte("#!/bin/sh\n")), bundlegen.Dir("check-and-run-llama-cpp.sh/"))
	if err := bundlegen.Write(&buf, archive.Gzip, bundle); err != nil {
		t.Fatal(err)
	}
	bad := writeFile(t, filepath.Join(dir, "bad.tar.gz"), buf.String())
	r := runLB(t, nil, "install", "--app-dir", app, bad)
	if r.code != 2 || !strings.Contains(r.stderr, "directory check-and-run-llama-cpp.sh") {
		t.Errorf("want exit 2 naming the helper: %v", r)
	}
	if target, _ := os.Readlink(filepath.Join(app, "llama-cpp", "check-and-run-llama-cpp.sh")); target != llamaboot {
		t.Errorf("old bundle's helper link is gone: %q", target)
	}
}

// stallingServer sends the first half of body, then nothing until the
// client goes; later requests get the whole file (and Range).
type stallingServer struct {
	*httptest.Server
	calls  atomic.Int32
	ranges chan string
}

func newStallingServer(t *testing.T, body []byte) *stallingServer {
	s := &stallingServer{ranges: make(chan string, 10)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v"`)
		if s.calls.Add(1) == 1 {
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			w.Write(body[:len(body)/2])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		s.ranges <- r.Header.Get("Range")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	t.Cleanup(s.Close)
	return s
}

func partSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// TestInstallStopsOnSIGTERM: a stalled download ends at SIGTERM with the
// old bundle active, the partial download kept and resumed next time; a
// download that got nothing does not claim to keep anything.
func TestInstallStopsOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	if r := runLB(t, nil, "install", "--app-dir", app, releaseArchive(t, dir, "old.tar.gz", "b1")); r.code != 0 {
		t.Fatal(r)
	}
	before, _ := os.Readlink(filepath.Join(app, "llama-cpp"))
	body, _ := os.ReadFile(releaseArchive(t, dir, "llama-b7005.tar.gz", "b7005"))
	srv := newStallingServer(t, body)
	part := filepath.Join(app, "cache", "llama-b7005.tar.gz.part")
	cmd := exec.Command(llamaboot, "install", "--app-dir", app, "--stall-timeout", "1h", srv.URL+"/llama-b7005.tar.gz")
	cmd.Env = cleanEnv()
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "half the download in "+part, 30*time.Second, func() bool { return partSize(part) == int64(len(body)/2) })
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(out.String(), "kept in "+part) {
		t.Fatalf("want exit 1 keeping the part: %v\n%s", err, out.String())
	}
	if target, _ := os.Readlink(filepath.Join(app, "llama-cpp")); target != before {
		t.Errorf("old bundle no longer active: %s", target)
	}
	r := runLB(t, nil, "install", "--app-dir", app, srv.URL+"/llama-b7005.tar.gz")
	if r.code != 0 || <-srv.ranges != fmt.Sprintf("bytes=%d-", len(body)/2) {
		t.Errorf("resume: %v", r)
	}

	l, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := l.Addr().String()
	l.Close()
	r = runLB(t, nil, "install", "--app-dir", app, "--retries", "1", "--retry-delay", "10ms", "http://"+closed+"/llama-b7006.tar.gz")
	if r.code != 1 || strings.Contains(r.stderr, "kept") || !strings.Contains(r.stderr, "giving up after 2 attempts") {
		t.Errorf("nothing downloaded: %v", r)
	}
}

// TestEntryStopsDuringBootInstall: docker stop does not wait for a stalled
// boot download: entry exits 143 (128+SIGTERM) and keeps the part.
func TestEntryStopsDuringBootInstall(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	body, _ := os.ReadFile(releaseArchive(t, dir, "llama-b7007.tar.gz", "b7007"))
	srv := newStallingServer(t, body)
	part := filepath.Join(app, "cache", "llama-b7007.tar.gz.part")
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_PKG_PATH=" + srv.URL + "/llama-b7007.tar.gz"},
		"--stall-timeout", "1h", "--", "sleep", "1000")
	waitFor(t, "half the download in "+part, 30*time.Second, func() bool { return partSize(part) == int64(len(body)/2) })
	e.cmd.Process.Signal(syscall.SIGTERM)
	if code := e.wait(t, 30*time.Second); code != 143 || !strings.Contains(e.out.String(), "stopped by SIGTERM") {
		t.Errorf("exit %d\n%s", code, e.out.String())
	}
	if strings.Contains(e.out.String(), "started sleep") {
		t.Error("the command was started after the stop")
	}
	if partSize(part) != int64(len(body)/2) {
		t.Error("the partial download was not kept")
	}
}
