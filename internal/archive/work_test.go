package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// deepTar is n links in a dir d levels deep, each climbing back up to the
// top (the shape of the CPU bomb: 100 of them near depth 250 took 77s).
func deepTar(t testing.TB, n, d int) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := strings.Repeat("d/", d-2) + "d"
	up := strings.Repeat("../", d-2) + ".."
	tw.WriteHeader(&tar.Header{Name: "llama-server", Typeflag: tar.TypeReg, Mode: 0o755, Size: 2})
	tw.Write([]byte("x\n"))
	for i := range n {
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("%s/l%d", dir, i), Typeflag: tar.TypeSymlink, Linkname: up + "/d"}); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	return buf.Bytes()
}

func extractWork(t testing.TB, data []byte, lim Limits) (int64, error) {
	t.Helper()
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	w := newWriter(root, lim)
	if _, err := extractTar(bytes.NewReader(data), w); err != nil {
		return w.work.max - w.work.left, err
	}
	err = w.finish()
	return w.work.max - w.work.left, err
}

// TestWorkLinearInEntriesTimesDepth: what extraction and the audit cost,
// in path steps (each one syscall), grows with entries × depth, not with
// depth squared as looking every prefix up from the root again did.
func TestWorkLinearInEntriesTimesDepth(t *testing.T) {
	for _, c := range []struct{ n, d int }{{10, 60}, {40, 60}, {10, 240}, {40, 240}, {100, 250}} {
		used, err := extractWork(t, deepTar(t, c.n, c.d), Limits{MaxWork: 1 << 40})
		if err != nil {
			t.Fatalf("%d links at depth %d: %v", c.n, c.d, err)
		}
		if bound := int64(16*c.n*c.d + 4*c.d*c.d); used > bound {
			t.Errorf("%d links at depth %d cost %d path steps, over the linear bound %d", c.n, c.d, used, bound)
		}
		t.Logf("%d links at depth %d: %d path steps", c.n, c.d, used)
	}
}

// TestWorkBudgetRefuses: an archive over its work budget is refused as bad
// input, naming the limit, before the work is done.
func TestWorkBudgetRefuses(t *testing.T) {
	used, err := extractWork(t, deepTar(t, 100, 250), Limits{MaxWork: 20_000})
	var ae *Error
	if !errors.As(err, &ae) || !strings.Contains(err.Error(), "costs more than 20000 path steps") {
		t.Fatalf("want the work budget named: %v", err)
	}
	if used > 21_000 {
		t.Errorf("spent %d steps past a budget of 20000", used)
	}
	// The default scales with --max-entries: 100 entries allowed, 3000 steps.
	if _, err := extractWork(t, deepTar(t, 90, 250), Limits{MaxEntries: 100}); err == nil || !strings.Contains(err.Error(), "costs more than 3000 path steps") {
		t.Errorf("default budget for 100 entries: %v", err)
	}
}

// TestContextStopsExtractionAndAudit: SIGTERM (the context ending) stops
// the work in every loop, the audit after extraction included (it once
// went on for 32s).
func TestContextStopsExtractionAndAudit(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := extractWork(t, deepTar(t, 100, 250), Limits{Context: ctx}); !errors.Is(err, context.Canceled) {
		t.Errorf("extraction: %v, want context.Canceled", err)
	}
	dir := t.TempDir()
	root, _ := os.OpenRoot(dir)
	defer root.Close()
	w := newWriter(root, Limits{})
	if _, err := extractTar(bytes.NewReader(deepTar(t, 100, 250)), w); err != nil {
		t.Fatal(err)
	}
	if err := Audit(root, Limits{Context: ctx}); !errors.Is(err, context.Canceled) {
		t.Errorf("audit: %v, want context.Canceled", err)
	}
}

// BenchmarkDeepArchive prints what 100 links near depth 250 cost against
// 100 links at depth 3, in the same process.
func BenchmarkDeepArchive(b *testing.B) {
	for _, d := range []int{3, 250} {
		data := deepTar(b, 100, d)
		b.Run(fmt.Sprintf("depth%d", d), func(b *testing.B) {
			for range b.N {
				if _, err := extractWork(b, data, Limits{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
