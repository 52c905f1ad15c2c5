package install

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
	"github.com/llamaboot/llamaboot/internal/fetch"
	"github.com/llamaboot/llamaboot/internal/printer"
)

// bundleServer serves one archive whose content can change, with ETags.
type bundleServer struct {
	*httptest.Server
	body     atomic.Value // []byte
	requests atomic.Int32
	cond     atomic.Int32 // conditional requests seen
}

func newBundleServer(t *testing.T, body []byte) *bundleServer {
	s := &bundleServer{}
	s.body.Store(body)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if r.Header.Get("If-None-Match") != "" {
			s.cond.Add(1)
		}
		b := s.body.Load().([]byte)
		sum := sha256.Sum256(b)
		w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:8])+`"`)
		switch r.URL.Path {
		case "/SHA256SUMS":
			fmt.Fprintf(w, "%s  llama-b7300-bin-ubuntu-x64.tar.gz\n", hex.EncodeToString(sum[:]))
		default:
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func gzBundle(t *testing.T, tag, server string) []byte {
	var buf bytes.Buffer
	if err := bundlegen.Write(&buf, archive.Gzip, bundlegen.Release(tag, []byte(server))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func urlOpts(app, u string) Options {
	return Options{AppDir: app, Source: u, Printer: printer.Discard(),
		Download: fetch.Options{Retries: 2, RetryBase: 10 * time.Millisecond}}
}

func TestInstallFromURLThenOffline(t *testing.T) {
	srv := newBundleServer(t, gzBundle(t, "b7300", "remote"))
	app := t.TempDir()
	u := srv.URL + "/llama-b7300-bin-ubuntu-x64.tar.gz?token=abc"
	r, err := Install(context.Background(), urlOpts(app, u))
	if err != nil {
		t.Fatal(err)
	}
	if readServer(t, app) != "remote" || r.Marker.BuildTag != "b7300" || r.Marker.ETag == "" {
		t.Errorf("marker %+v", r.Marker)
	}
	if strings.Contains(r.Marker.SourcePath, "abc") || !strings.HasSuffix(r.Marker.SourcePath, "?REDACTED") {
		t.Errorf("marker source %q should be redacted", r.Marker.SourcePath)
	}
	// Offline second boot: the server is gone and not needed.
	srv.Close()
	var out bytes.Buffer
	o := urlOpts(app, u)
	o.Printer = printer.New(&out, &out, "", false)
	r, err = Install(context.Background(), o)
	if err != nil || !r.UpToDate || !strings.Contains(out.String(), "server not contacted") {
		t.Errorf("offline boot: %v %+v %s", err, r, out.String())
	}
}

func TestRefreshAskConditionally(t *testing.T) {
	srv := newBundleServer(t, gzBundle(t, "b7300", "v1"))
	app := t.TempDir()
	u := srv.URL + "/llama-b7300-bin-ubuntu-x64.tar.gz"
	if _, err := Install(context.Background(), urlOpts(app, u)); err != nil {
		t.Fatal(err)
	}
	o := urlOpts(app, u)
	o.Refresh = true
	r, err := Install(context.Background(), o)
	if err != nil || !r.UpToDate || srv.cond.Load() != 1 {
		t.Fatalf("unchanged refresh: %v up-to-date %v, conditional requests %d", err, r.UpToDate, srv.cond.Load())
	}
	srv.body.Store(gzBundle(t, "b7301", "v2"))
	r, err = Install(context.Background(), o)
	if err != nil || r.UpToDate || readServer(t, app) != "v2" {
		t.Fatalf("changed refresh: %v %+v", err, r)
	}
	// Without --refresh a changed server is not even asked.
	before := srv.requests.Load()
	srv.body.Store(gzBundle(t, "b7302", "v3"))
	if r, _ := Install(context.Background(), urlOpts(app, u)); !r.UpToDate || srv.requests.Load() != before {
		t.Error("a plain boot contacted the server")
	}
}

func TestURLChecksums(t *testing.T) {
	body := gzBundle(t, "b7300", "pinned")
	srv := newBundleServer(t, body)
	app := t.TempDir()
	u := srv.URL + "/llama-b7300-bin-ubuntu-x64.tar.gz"
	o := urlOpts(app, u)
	o.SHA256 = strings.Repeat("0", 64)
	_, err := Install(context.Background(), o)
	var bad interface{ BadInput() bool }
	if !errors.As(err, &bad) || !strings.Contains(err.Error(), "checksum mismatch") || !strings.Contains(err.Error(), "AUTO_INFER_LLAMA_CPP_PKG_SHA256") {
		t.Fatalf("wrong pin: %v", err)
	}
	assertNoLeftovers(t, app)
	o = urlOpts(app, u)
	o.SHA256From = srv.URL + "/SHA256SUMS"
	r, err := Install(context.Background(), o)
	sum := sha256.Sum256(body)
	if err != nil || r.Marker.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("--sha256-from: %v", err)
	}
}

func TestURL404IsBadInput(t *testing.T) {
	srv := newBundleServer(t, nil)
	_, err := Install(context.Background(), urlOpts(t.TempDir(), srv.URL+"/"))
	var bad interface{ BadInput() bool }
	if !errors.As(err, &bad) {
		t.Errorf("a URL naming no file: %v", err)
	}
	for _, u := range []string{srv.URL + "/", srv.URL + "/releases/..", srv.URL + "/releases/llama.tar.gz/"} {
		_, err = Install(context.Background(), urlOpts(t.TempDir(), u))
		if !errors.As(err, &bad) || !strings.Contains(err.Error(), "names no file") {
			t.Errorf("%s: %v", u, err)
		}
	}
	if srv.requests.Load() != 0 {
		t.Errorf("a URL naming no file was still requested")
	}
	missing := httptest.NewServer(http.NotFoundHandler())
	defer missing.Close()
	_, err = Install(context.Background(), urlOpts(t.TempDir(), missing.URL+"/llama.tgz"))
	if !errors.As(err, &bad) || !strings.Contains(err.Error(), missing.URL+"/llama.tgz: HTTP 404") {
		t.Errorf("404: %v", err)
	}
}

// TestPartialDownloadResumesNextRun: a download cut in one run (no retries
// left) is resumed with Range by the next run, not restarted.
func TestPartialDownloadResumesNextRun(t *testing.T) {
	body := gzBundle(t, "b7300", strings.Repeat("big server ", 50_000))
	srv, ranges := halfServer(t, body, func(w http.ResponseWriter, r *http.Request) {
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
	})
	app := t.TempDir()
	o := urlOpts(app, srv.URL+"/llama-b7300.tar.gz")
	o.Download.Retries = 0
	if _, err := Install(context.Background(), o); err == nil || !strings.Contains(err.Error(), "is kept in "+filepath.Join(app, "cache", "llama-b7300.tar.gz.part")) {
		t.Fatalf("first run should fail and keep the partial download: %v", err)
	}
	if _, err := Install(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if got := ranges(); len(got) != 1 || got[0] != fmt.Sprintf("bytes=%d-", len(body)/2) {
		t.Errorf("second run asked for %q, want a resume from byte %d", got, len(body)/2)
	}
	if readServer(t, app) != strings.Repeat("big server ", 50_000) {
		t.Error("wrong bundle installed")
	}
}

// halfServer sends the first half of body to the first request, then calls
// cut (which drops or stalls the connection); later requests get the file
// with Range support. ranges returns the Range header of each later request.
func halfServer(t *testing.T, body []byte, cut http.HandlerFunc) (srv *httptest.Server, ranges func() []string) {
	var mu sync.Mutex
	var calls int
	var got []string
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"one"`)
		mu.Lock()
		calls++
		first := calls == 1
		if !first {
			got = append(got, r.Header.Get("Range"))
		}
		mu.Unlock()
		if first {
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			w.Write(body[:len(body)/2])
			w.(http.Flusher).Flush()
			cut(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	t.Cleanup(srv.Close)
	return srv, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

// TestURLFileNameControlCharacters: the cache name of a bundle URL comes
// from its last element; %0A or %00 there would put control characters in
// a file name and in every message naming it. Refused, shown quoted.
func TestURLFileNameControlCharacters(t *testing.T) {
	for _, c := range []struct{ url, want string }{
		{"https://h/llama%0Ab1.tar.gz", `names a file with control characters ("llama\nb1.tar.gz"`},
		{"https://h/a%00.tar.gz", `names a file with control characters ("a\x00.tar.gz"`},
		{"https://h/llama-b1.tar.gz", ""},
	} {
		name, err := urlFileName(c.url)
		switch {
		case c.want == "" && (err != nil || name != "llama-b1.tar.gz"):
			t.Errorf("%s: %q %v", c.url, name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %q %v, want %s", c.url, name, err, c.want)
		}
	}
}
