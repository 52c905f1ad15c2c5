package install

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
)

// Signals are watched (Options.Interrupt) once an install has work to do,
// and the context it returns is the one the install runs under: a signal
// then stops it with the old bundle active. A second boot that finds the
// archive already installed never asks.
func TestInterruptOnlyWhenThereIsWork(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	calls := 0
	interrupt := func(cancelled bool) func(context.Context) (context.Context, context.CancelFunc) {
		return func(ctx context.Context) (context.Context, context.CancelFunc) {
			calls++
			ctx, cancel := context.WithCancel(ctx)
			if cancelled {
				cancel() // the signal came
			}
			return ctx, cancel
		}
	}
	old := writeArchive(t, dir, "llama-b1-bin-ubuntu-x64.tar.gz", archive.Gzip, bundlegen.Release("b1", []byte("old")))
	o := opts(app, old)
	o.Interrupt = interrupt(false)
	if _, err := Install(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if calls != 1 {
		t.Errorf("first install: Interrupt called %d times, want 1", calls)
	}
	calls = 0
	if r, err := Install(context.Background(), o); err != nil || !r.UpToDate {
		t.Fatalf("second install: %+v, %v", r, err)
	}
	if calls != 0 {
		t.Errorf("an already installed archive called Interrupt %d times", calls)
	}
	o = opts(app, writeArchive(t, dir, "llama-b2-bin-ubuntu-x64.tar.gz", archive.Gzip, bundlegen.Release("b2", []byte("new"))))
	o.Interrupt = interrupt(true)
	if _, err := Install(context.Background(), o); err == nil {
		t.Fatal("an install whose signal came went on")
	}
	if calls != 1 || readServer(t, app) != "old" {
		t.Errorf("interrupted install: Interrupt called %d times, active server %q (want old)", calls, readServer(t, app))
	}
}
