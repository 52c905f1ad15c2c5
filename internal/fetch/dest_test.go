package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/printer"
)

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// TestExpectedChecksum: a matching digest lands at Dest; a wrong one
// leaves neither Dest nor a part file, and names both digests.
func TestExpectedChecksum(t *testing.T) {
	body := payload(200_000, 7)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"c"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	defer srv.Close()
	o := opts(t, srv.URL+"/m.gguf")
	o.SHA256 = strings.ToUpper(sum(body))
	if res, err := Fetch(context.Background(), o); err != nil || res.SHA256 != sum(body) {
		t.Fatalf("matching digest: %v", err)
	}
	o = opts(t, srv.URL+"/m.gguf")
	o.SHA256 = strings.Repeat("0", 64)
	_, err := Fetch(context.Background(), o)
	var fe *Error
	if !errors.As(err, &fe) || fe.Kind != Checksum || !fe.BadInput() || !strings.Contains(err.Error(), "expected sha256 "+o.SHA256+", got "+sum(body)) {
		t.Fatalf("wrong digest: %v", err)
	}
	if exists(o.Dest) || exists(o.Dest+".part") || exists(o.Dest+".part.json") {
		t.Error("a mismatching download was left behind")
	}
	AddHint(err, Checksum, "fix MY_VAR")
	if !strings.HasSuffix(err.Error(), "the download was removed (fix MY_VAR)") {
		t.Errorf("hint not shown: %v", err)
	}
	o.SHA256 = "xyz"
	if _, err := Fetch(context.Background(), o); !errors.As(err, &fe) || !strings.Contains(err.Error(), `"xyz" is not 64 hex characters`) {
		t.Errorf("malformed digest: %v", err)
	}
}

// TestCancelKeepsAResumablePart: cancelling mid-download returns promptly
// with context.Canceled, keeps the part, and the next call resumes it.
func TestCancelKeepsAResumablePart(t *testing.T) {
	body := payload(1<<20, 8)
	var calls atomic.Int32
	var ranges []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"k"`)
		if calls.Add(1) == 1 {
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			w.Write(body[:400_000])
			w.(http.Flusher).Flush()
			<-r.Context().Done() // then stall until the client goes
			return
		}
		ranges = append(ranges, r.Header.Get("Range"))
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	o := opts(t, srv.URL+"/m.gguf")
	o.StallTimeout = time.Hour // only the cancel may end it
	o.OnProgress = func(done, total int64) {
		if done >= 400_000 {
			cancel()
		}
	}
	_, err := Fetch(ctx, o)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "390.6 KiB of it is kept in "+o.Dest+".part") {
		t.Fatalf("cancelled fetch: %v", err)
	}
	o.OnProgress = nil
	res, err := Fetch(context.Background(), o)
	if err != nil || res.SHA256 != sum(body) {
		t.Fatalf("resume: %v", err)
	}
	if len(ranges) != 1 || ranges[0] != "bytes=400000-" {
		t.Errorf("second call asked for %q", ranges)
	}
	if exists(o.Dest+".part") || exists(o.Dest+".part.json") {
		t.Error("part files left after success")
	}
}

// TestNothingKeptIsNotClaimed: a download that never got a byte, or got
// bytes it cannot resume (no ETag or Last-Modified), does not say a partial
// download is kept, and leaves no part file.
func TestNothingKeptIsNotClaimed(t *testing.T) {
	o := opts(t, "http://"+closedPort(t)+"/m.gguf")
	o.Retries = 1
	_, err := Fetch(context.Background(), o)
	if err == nil || strings.Contains(err.Error(), "kept") || exists(o.Dest+".part") {
		t.Errorf("nothing downloaded: %v", err)
	}
	body := payload(100_000, 9)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cut(w, body, 50_000, "") // no validator
	}))
	defer srv.Close()
	o = opts(t, srv.URL+"/m.gguf")
	o.Retries = 0
	_, err = Fetch(context.Background(), o)
	if err == nil || strings.Contains(err.Error(), "kept") || exists(o.Dest+".part") {
		t.Errorf("unresumable part: %v", err)
	}
}

func TestOnProgress(t *testing.T) {
	body := payload(3<<20, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	defer srv.Close()
	o := opts(t, srv.URL+"/m.gguf")
	var last, calls int64
	o.OnProgress = func(done, total int64) {
		if done < last || total != int64(len(body)) {
			t.Errorf("progress went %d → %d of %d", last, done, total)
		}
		last = done
		calls++
	}
	if _, err := Fetch(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if last != int64(len(body)) || calls < 2 {
		t.Errorf("last progress %d after %d calls", last, calls)
	}
}

// tmpfs mounts a small tmpfs (root only, as in CI).
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

// TestNoSpace: with Content-Length the lack of room is found before any
// byte is written; without it, ENOSPC during the write is reported as such
// (not retried, not bad input).
func TestNoSpace(t *testing.T) {
	dir := tmpfs(t, "256k")
	body := payload(1<<20, 11)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"n"`)
		if r.URL.Path == "/chunked.gguf" {
			for i := 0; i < len(body); i += 64 << 10 {
				w.Write(body[i : i+64<<10])
				w.(http.Flusher).Flush()
			}
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	defer srv.Close()
	for p, want := range map[string]string{
		"/sized.gguf":   "needs 1.0 MiB more but the file system holding " + dir + " has ",
		"/chunked.gguf": "the file system holding " + dir + " is full after ",
	} {
		var out bytes.Buffer
		o := opts(t, srv.URL+p)
		o.Dest = filepath.Join(dir, strings.TrimPrefix(p, "/"))
		o.Printer = printer.New(&out, &out, "", false)
		_, err := Fetch(context.Background(), o)
		var fe *Error
		if !errors.As(err, &fe) || fe.Kind != NoSpace || fe.BadInput() || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v", p, err)
		}
		if strings.Contains(out.String(), "retry") {
			t.Errorf("%s: a full disk was retried:\n%s", p, out.String())
		}
		os.Remove(o.Dest + ".part")
	}
}
