package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// deepArchive writes a .tar.gz of n links in a dir 248 levels deep, each
// climbing back to the top: 100 of them are 1.7 KiB and once cost 77s of
// CPU (375s for 1000) holding the install lock.
func deepArchive(t *testing.T, dir string, n int) string {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	tw.WriteHeader(&tar.Header{Name: "llama-server", Typeflag: tar.TypeReg, Mode: 0o755, Size: 2})
	tw.Write([]byte("x\n"))
	deep := strings.Repeat("d/", 247) + "d"
	up := strings.Repeat("../", 246) + ".."
	for i := range n {
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("%s/l%d", deep, i), Typeflag: tar.TypeSymlink, Linkname: up + "/d"})
	}
	tw.Close()
	gz.Close()
	p := filepath.Join(dir, fmt.Sprintf("deep-%d.tar.gz", n))
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDeepArchiveBoundedWork: 100 entries near depth 250 install within a
// 10-second CPU limit (RLIMIT_CPU: the old install needed 37s of it, and
// was killed); an archive over its work budget (which scales with
// --max-entries, and which extraction and audits share) is refused with
// exit 2 and the limit named, the worst within it ends under 10s of CPU; SIGTERM in
// the middle of a long extraction ends it at once, nothing activated.
func TestDeepArchiveBoundedWork(t *testing.T) {
	dir := t.TempDir()
	deep := deepArchive(t, dir, 100)
	cmd := exec.Command("prlimit", "--cpu=10", llamaboot, "install", "--app-dir", filepath.Join(dir, "app"), deep)
	cmd.Env = cleanEnv()
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "activated") {
		t.Errorf("100 links near depth 250 under a 10s CPU limit: %v\n%s", err, out)
	}

	r := runLB(t, nil, "install", "--app-dir", filepath.Join(dir, "app2"), "--max-entries", "200", deep)
	if r.code != 2 || !strings.Contains(r.stderr, "costs more than 6000 path steps") || !strings.Contains(r.stderr, "raise --max-entries") {
		t.Errorf("over the work budget: want exit 2 naming it: %v", r)
	}

	// One budget for the whole install: 360k steps is more than the
	// extraction (with its audit) or the audit after the layout costs
	// alone, less than both together. Each pass once had its own budget, so
	// the install could cost twice what the limit promised.
	r = runLB(t, nil, "install", "--app-dir", filepath.Join(dir, "app4"), "--max-entries", "12000", deep)
	if r.code != 2 || !strings.Contains(r.stderr, "costs more than 360000 path steps") {
		t.Errorf("extraction and audits over one budget together: want exit 2 naming it: %v", r)
	}
	// The worst an archive can do within the default budget (1150 links
	// near depth 250: about 7s of CPU on the shared 2-core machine, refused
	// by the budget) ends within 10s of CPU, installed or refused.
	worst := deepArchive(t, dir, 1150)
	cmd = exec.Command("prlimit", "--cpu=10", llamaboot, "install", "--app-dir", filepath.Join(dir, "app5"), worst)
	cmd.Env = cleanEnv()
	wout, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 0 && code != 2 {
		t.Errorf("1150 links near depth 250 under a 10s CPU limit: %v (exit %d)\n%s", err, code, wout)
	}

	big := deepArchive(t, dir, 1000)
	app := filepath.Join(dir, "app3")
	var out bytes.Buffer
	cmd = exec.Command(llamaboot, "install", "--app-dir", app, big)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // well into extraction (about 8s in all)
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Errorf("SIGTERM did not stop the extraction within 5s:\n%s", out.String())
	}
	if _, err := os.Lstat(filepath.Join(app, "llama-cpp")); err == nil {
		t.Errorf("a stopped install activated a bundle:\n%s", out.String())
	}
}
