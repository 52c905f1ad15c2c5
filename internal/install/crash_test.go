package install

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
	"github.com/llamaboot/llamaboot/internal/fetch"
	"github.com/llamaboot/llamaboot/internal/printer"
)

// The test binary doubles as an installer process, so tests can SIGKILL a
// real process mid-install and run several at once.
func TestMain(m *testing.M) {
	if app := os.Getenv("LLAMABOOT_TEST_CHILD_APP"); app != "" {
		os.Exit(childInstall(app, os.Getenv("LLAMABOOT_TEST_CHILD_SRC"), os.Getenv("LLAMABOOT_TEST_CHILD_DIE_AT")))
	}
	os.Exit(m.Run())
}

func childInstall(app, src, dieAt string) int {
	// Force: alternating two bundles then extracts every time instead of
	// reactivating the kept one, so each kill lands in a whole install.
	o := Options{AppDir: app, Source: src, LockTimeout: time.Minute, Force: os.Getenv("LLAMABOOT_TEST_CHILD_FORCE") != "",
		Printer: printer.New(os.Stdout, os.Stderr, "[llama-cpp-pkg]", false)}
	j := &job{Options: o, afterStep: func(step string) {
		if step == dieAt {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}}
	if _, err := j.run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func child(app, src, dieAt string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "LLAMABOOT_TEST_CHILD_APP="+app, "LLAMABOOT_TEST_CHILD_SRC="+src, "LLAMABOOT_TEST_CHILD_DIE_AT="+dieAt)
	return cmd
}

// crashBundle has enough data that an install takes a while to kill into.
func crashBundle(server string) []bundlegen.Entry {
	es := bundlegen.Release("b1", []byte(server))
	for i := range 24 {
		es = append(es, bundlegen.Entry{Name: fmt.Sprintf("llama-b1/libggml-part%02d.so", i), Type: '0', Mode: 0o644, Size: 256 << 10})
	}
	return es
}

// checkWhole asserts that the install path is one complete bundle: its
// llama-server is one of want, and its marker and file count match it.
func checkWhole(t *testing.T, app string, sums map[string]string) string {
	t.Helper()
	dir, err := filepath.EvalSymlinks(filepath.Join(app, "llama-cpp"))
	if err != nil {
		t.Fatalf("install path missing: %v", err)
	}
	server, err := os.ReadFile(filepath.Join(dir, "bin", "llama-server"))
	if err != nil {
		t.Fatalf("llama-server missing: %v", err)
	}
	sum, ok := sums[string(server)]
	if !ok {
		t.Fatalf("llama-server holds %q, not a bundle we installed", server)
	}
	m, err := ReadMarker(dir)
	if err != nil || m.SHA256 != sum {
		t.Fatalf("marker %q does not match the files (want %s): %v", m.SHA256, sum, err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "bin"))
	if len(entries) != 7+24 {
		t.Fatalf("bundle has %d files in bin, want 31", len(entries))
	}
	return string(server)
}

func TestKillAtAnyPointLeavesAWholeBundle(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	srcs := map[string]string{
		"old": writeArchive(t, dir, "old.tar.gz", archive.Gzip, crashBundle("old")),
		"new": writeArchive(t, dir, "new.tar.gz", archive.Gzip, crashBundle("new")),
	}
	sums := map[string]string{}
	for k, p := range srcs {
		sums[k], _ = fetch.SumFile(p)
	}
	mustInstall(t, opts(app, srcs["old"]))

	// A reader that checks the invariant continuously, as llama-server
	// starting during an install would see it.
	var stop atomic.Bool
	var violations atomic.Int64
	var lastViolation atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			b, err := os.ReadFile(filepath.Join(app, "llama-cpp", "bin", "llama-server"))
			if err != nil || (string(b) != "old" && string(b) != "new") {
				violations.Add(1)
				lastViolation.Store(fmt.Sprintf("%q %v", b, err))
			}
		}
	}()

	other := func(cur string) string {
		if cur == "old" {
			return "new"
		}
		return "old"
	}
	cur := "old"
	// Deterministic kill points between the steps, then kills after timed
	// delays spread over a whole install.
	t.Setenv("LLAMABOOT_TEST_CHILD_FORCE", "1")
	for _, step := range []string{"extracted", "synced", "staged", "cached", "activated"} {
		out, err := child(app, srcs[other(cur)], step).CombinedOutput()
		if err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("child should die at %s: %v\n%s", step, err, out)
		}
		cur = checkWhole(t, app, sums)
	}
	start := time.Now()
	if out, err := child(app, srcs[other(cur)], "").CombinedOutput(); err != nil {
		t.Fatalf("full install: %v\n%s", err, out)
	}
	full := time.Since(start)
	cur = checkWhole(t, app, sums)
	const points = 16
	for i := range points {
		cmd := child(app, srcs[other(cur)], "")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(full * time.Duration(i) / points)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		cur = checkWhole(t, app, sums)
	}
	// The next run cleans up what the killed ones left and completes.
	mustInstall(t, opts(app, srcs[other(cur)]))
	if got := checkWhole(t, app, sums); got != other(cur) {
		t.Errorf("final install left %q active", got)
	}
	assertNoLeftovers(t, app)
	stop.Store(true)
	wg.Wait()
	if n := violations.Load(); n > 0 {
		t.Errorf("the install path was incomplete %d times, last: %v", n, lastViolation.Load())
	}
}

func TestConcurrentInstallsSerialise(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	src := writeArchive(t, dir, "same.tar.gz", archive.Gzip, crashBundle("same"))
	sum, _ := fetch.SumFile(src)

	const n = 4
	outs := make([]bytes.Buffer, n)
	cmds := make([]*exec.Cmd, n)
	for i := range cmds {
		cmds[i] = child(app, src, "")
		cmds[i].Stdout, cmds[i].Stderr = &outs[i], &outs[i]
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	extracted := 0
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("installer %d: %v\n%s", i, err, outs[i].String())
		}
		if strings.Contains(outs[i].String(), "extracted ") {
			extracted++
		}
	}
	if extracted != 1 {
		for i := range outs {
			t.Logf("installer %d:\n%s", i, outs[i].String())
		}
		t.Errorf("%d installers extracted the same bundle, want exactly 1", extracted)
	}
	checkWhole(t, app, map[string]string{"same": sum})

	// Two different bundles racing: the end state is one whole bundle.
	a := writeArchive(t, dir, "a.tar.gz", archive.Gzip, crashBundle("a"))
	b := writeArchive(t, dir, "b.tar.gz", archive.Gzip, crashBundle("b"))
	sa, _ := fetch.SumFile(a)
	sb, _ := fetch.SumFile(b)
	var wg sync.WaitGroup
	for _, src := range []string{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := child(app, src, "").CombinedOutput(); err != nil {
				t.Errorf("installer of %s: %v\n%s", src, err, out)
			}
		}()
	}
	wg.Wait()
	checkWhole(t, app, map[string]string{"a": sa, "b": sb})
	assertNoLeftovers(t, app)
}
