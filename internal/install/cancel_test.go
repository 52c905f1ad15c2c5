package install

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
	"github.com/llamaboot/llamaboot/internal/printer"
)

// cancelOn cancels when the printed output first contains want.
type cancelOn struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	want   string
	cancel context.CancelFunc
}

func (c *cancelOn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(b)
	if strings.Contains(c.buf.String(), c.want) {
		c.cancel()
	}
	return len(b), nil
}

// bigBundle has an 8 MiB incompressible library, so copying it takes
// eight 1 MiB reads.
func bigBundle(tag, server string) []bundlegen.Entry {
	noise := make([]byte, 8<<20)
	rand.Read(noise)
	return append(bundlegen.Release(tag, []byte(server)),
		bundlegen.Entry{Name: "llama-" + tag + "/libggml-cuda.so", Type: '0', Mode: 0o644, Body: noise})
}

// TestCancelDuringCopyAndExtract: cancelling once the copy into the cache
// is under way stops the install at the next read, with the old bundle
// active and nothing half-made left.
func TestCancelDuringCopyAndExtract(t *testing.T) {
	for _, f := range []archive.Format{archive.Gzip, archive.Zip} {
		t.Run(f.String(), func(t *testing.T) {
			dir := t.TempDir()
			app := filepath.Join(dir, "app")
			mustInstall(t, opts(app, writeArchive(t, dir, "old.tar.gz", archive.Gzip, bundlegen.Release("b1", []byte("old")))))
			src := writeArchive(t, dir, "big"+extOf[f], f, bigBundle("b2", "new"))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			w := &cancelOn{want: "copying to cache and extracting: ", cancel: cancel}
			o := opts(app, src)
			o.Printer = printer.New(w, w, "", false)
			o.Printer.ProgressEvery = 0 // a progress line per read: the event to cancel on
			_, err := Install(ctx, o)
			if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "the active bundle is unchanged") {
				t.Fatalf("want a cancelled install, got %v\n%s", err, w.buf.String())
			}
			// Stopped at the next read: not after reading the whole 8 MiB.
			if n := strings.Count(w.buf.String(), "extracting: "); n > 3 {
				t.Errorf("%d progress lines after the cancel: it was not stopped promptly\n%s", n, w.buf.String())
			}
			if readServer(t, app) != "old" {
				t.Error("the old bundle is no longer active")
			}
			assertNoLeftovers(t, app)
			if _, err := os.Stat(filepath.Join(app, "cache", filepath.Base(src))); err == nil {
				t.Error("a cancelled copy was committed to the cache")
			}
			if got := listVersions(app); len(got) != 1 {
				t.Errorf("versions after cancel: %v", got)
			}
		})
	}
}

// TestCancelDuringDownload: the download stops when cancelled, its part is
// kept, and the next run resumes it with Range.
func TestCancelDuringDownload(t *testing.T) {
	var body []byte
	{
		var buf bytes.Buffer
		if err := bundlegen.Write(&buf, archive.Gzip, bigBundle("b7300", "remote")); err != nil {
			t.Fatal(err)
		}
		body = buf.Bytes()
	}
	half := len(body) / 2
	srv, ranges := halfServer(t, body, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	mustInstall(t, opts(app, writeArchive(t, dir, "old.tar.gz", archive.Gzip, bundlegen.Release("b1", []byte("old")))))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := urlOpts(app, srv.URL+"/llama-b7300.tar.gz")
	o.Download.StallTimeout = time.Hour // only the cancel ends it
	o.Download.OnProgress = func(done, total int64) {
		if done >= int64(half) {
			cancel()
		}
	}
	part := filepath.Join(app, "cache", "llama-b7300.tar.gz.part")
	_, err := Install(ctx, o)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "kept in "+part) {
		t.Fatalf("want a cancelled download with its part kept: %v", err)
	}
	if fi, err := os.Stat(part); err != nil || fi.Size() != int64(half) {
		t.Fatalf("part file: %v %v", fi, err)
	}
	if readServer(t, app) != "old" {
		t.Error("the old bundle is no longer active")
	}
	o.Download.OnProgress = nil
	if _, err := Install(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if got := ranges(); len(got) != 1 || got[0] != fmt.Sprintf("bytes=%d-", half) {
		t.Errorf("the next run asked for %q, want a resume from %d", got, half)
	}
	if readServer(t, app) != "remote" {
		t.Error("the downloaded bundle is not active")
	}
}
