package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/printer"
)

func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31) ^ seed
	}
	return b
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func opts(t *testing.T, u string) Options {
	return Options{URL: u, Dest: filepath.Join(t.TempDir(), "dl", "file.bin"), Retries: 3, RetryBase: 10 * time.Millisecond, StallTimeout: 2 * time.Second, Printer: printer.Discard()}
}

// cut writes the first n bytes of body then drops the connection.
func cut(w http.ResponseWriter, body []byte, n int, etag string) {
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	w.WriteHeader(200)
	w.Write(body[:n])
	w.(http.Flusher).Flush()
	conn, _, _ := w.(http.Hijacker).Hijack()
	conn.Close()
}

type recorder struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (r *recorder) add(req *http.Request) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, req)
	return len(r.reqs)
}

func TestRedirectNamesTheFile(t *testing.T) {
	body := payload(100_000, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/latest", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/releases/llama-b7200-bin.tar.gz", http.StatusFound)
	})
	mux.HandleFunc("/releases/llama-b7200-bin.tar.gz", func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Unix(1_700_000_000, 0), bytes.NewReader(body))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	o := opts(t, srv.URL+"/latest")
	res, err := Fetch(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Path != o.Dest || res.Name != "llama-b7200-bin.tar.gz" || res.SHA256 != sum(body) || res.Size != int64(len(body)) || res.LastModified == "" {
		t.Errorf("result %+v", res)
	}
	got, _ := os.ReadFile(res.Path)
	if !bytes.Equal(got, body) {
		t.Error("content differs")
	}
}

func TestResumeAfterCutConnection(t *testing.T) {
	body := payload(1<<20, 2)
	var rec recorder
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rec.add(r) == 1 {
			served.Add(600_000)
			cut(w, body, 600_000, `"v1"`)
			return
		}
		w.Header().Set("ETag", `"v1"`)
		cw := &countingWriter{ResponseWriter: w, n: &served}
		http.ServeContent(cw, r, "", time.Time{}, bytes.NewReader(body))
	}))
	defer srv.Close()
	res, err := Fetch(context.Background(), opts(t, srv.URL+"/pkg.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	if res.SHA256 != sum(body) {
		t.Fatal("wrong content after resume")
	}
	if len(rec.reqs) != 2 || rec.reqs[1].Header.Get("Range") != "bytes=600000-" || rec.reqs[1].Header.Get("If-Range") != `"v1"` {
		t.Errorf("second request did not resume: %v", rec.reqs[len(rec.reqs)-1].Header)
	}
	if s := served.Load(); s > int64(len(body))+1000 {
		t.Errorf("served %d bytes for a %d-byte file: not resumed", s, len(body))
	}
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	c.n.Add(int64(len(b)))
	return c.ResponseWriter.Write(b)
}

func TestServerWithoutRangeSupport(t *testing.T) {
	body := payload(500_000, 3)
	var rec recorder
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rec.add(r) == 1 {
			cut(w, body, 200_000, `"x"`)
			return
		}
		w.Header().Set("ETag", `"x"`)
		w.Write(body) // ignores Range: 200 with the whole file
	}))
	defer srv.Close()
	res, err := Fetch(context.Background(), opts(t, srv.URL+"/pkg.tar"))
	if err != nil || res.SHA256 != sum(body) {
		t.Fatalf("err %v, sum ok %v", err, res.SHA256 == sum(body))
	}
}

func TestChangedETagMidResumeStartsOver(t *testing.T) {
	v1, v2 := payload(400_000, 4), payload(450_000, 5)
	var rec recorder
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rec.add(r) == 1 {
			cut(w, v1, 100_000, `"v1"`)
			return
		}
		w.Header().Set("ETag", `"v2"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(v2))
	}))
	defer srv.Close()
	res, err := Fetch(context.Background(), opts(t, srv.URL+"/pkg.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	if res.SHA256 != sum(v2) || res.ETag != `"v2"` {
		t.Errorf("want the new version whole, got %+v", res)
	}
}

func TestHTTPErrors(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/missing.tgz":
			http.NotFound(w, r)
		case "/secret.tgz":
			w.WriteHeader(http.StatusForbidden)
		case "/flaky.tgz":
			if calls.Add(1) == 1 {
				w.WriteHeader(http.StatusBadGateway)
				return
			}
			w.Write([]byte("ok"))
		case "/down.tgz":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/huge.tgz":
			w.Header().Set("Content-Length", "1000000")
			w.Write(make([]byte, 1000000))
		}
	}))
	defer srv.Close()
	for _, c := range []struct {
		path     string
		status   int
		bad      bool
		contains string
	}{
		{"/missing.tgz", 404, true, "/missing.tgz: HTTP 404 Not Found"},
		{"/secret.tgz", 403, true, "HTTP 403 Forbidden: check the URL and the access token"},
		{"/down.tgz", 0, false, "giving up after 4 attempts: HTTP 503"},
		{"/huge.tgz", 0, true, "is 976.6 KiB, over the 976.6 KiB download limit"},
	} {
		o := opts(t, srv.URL+c.path)
		o.MaxBytes = 1_000_000 - 1
		_, err := Fetch(context.Background(), o)
		var fe *Error
		if err == nil || errors.As(err, &fe) != c.bad || !strings.Contains(err.Error(), c.contains) {
			t.Errorf("%s: got %v", c.path, err)
		}
		if c.status != 0 && (fe == nil || fe.Status != c.status) {
			t.Errorf("%s: status %+v", c.path, fe)
		}
	}
	res, err := Fetch(context.Background(), opts(t, srv.URL+"/flaky.tgz"))
	if err != nil || res.SHA256 != sum([]byte("ok")) || calls.Load() != 2 {
		t.Errorf("500-then-200: %v after %d calls", err, calls.Load())
	}
}

func TestStalledServer(t *testing.T) {
	body := payload(300_000, 6)
	var rec recorder
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"s"`)
		if rec.add(r) == 1 {
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			w.Write(body[:1000])
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	defer srv.Close()
	o := opts(t, srv.URL+"/pkg.tgz")
	o.StallTimeout = 200 * time.Millisecond
	var out bytes.Buffer
	o.Printer = printer.New(&out, &out, "", false)
	start := time.Now()
	res, err := Fetch(context.Background(), o)
	if err != nil || res.SHA256 != sum(body) {
		t.Fatalf("err %v", err)
	}
	if !strings.Contains(out.String(), "no data for 200ms") || time.Since(start) > 5*time.Second {
		t.Errorf("stall not detected promptly (%s):\n%s", time.Since(start), out.String())
	}
}

func TestTokenAndRedaction(t *testing.T) {
	var auth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer srv.Close()
	var out bytes.Buffer
	o := opts(t, strings.Replace(srv.URL, "http://", "http://user:pw@", 1)+"/p.tgz?sig=abc")
	o.Token = "s3cr3t"
	o.Printer = printer.New(&out, &out, "", false)
	_, err := Fetch(context.Background(), o)
	if auth != "Bearer s3cr3t" {
		t.Errorf("Authorization = %q", auth)
	}
	for _, secret := range []string{"s3cr3t", "pw", "sig=abc"} {
		if strings.Contains(err.Error()+out.String(), secret) {
			t.Errorf("%q leaked: %v %s", secret, err, out.String())
		}
	}
	if got := Redact("https://u:p@h.example/a/b.tgz?X-Amz-Signature=1#f"); got != "https://h.example/a/b.tgz?REDACTED" {
		t.Errorf("Redact = %q", got)
	}
}

func TestSumFromFile(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s  other.zip\n%s *llama-b1.tar.gz\n", strings.Repeat("a", 64), strings.Repeat("B", 64))
	}))
	defer srv.Close()
	got, err := SumFromFile(context.Background(), opts(t, ""), srv.URL+"/SHA256SUMS", "llama-b1.tar.gz")
	if err != nil || got != strings.Repeat("b", 64) {
		t.Errorf("got %q %v", got, err)
	}
	if _, err := SumFromFile(context.Background(), opts(t, ""), srv.URL+"/SHA256SUMS", "nope.tgz"); err == nil || !strings.Contains(err.Error(), "lists no sha256 for nope.tgz") {
		t.Errorf("missing entry: %v", err)
	}
}
