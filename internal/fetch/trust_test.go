package fetch

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/printer"
)

// TestTrickleCannotKeepADownloadAlive: a server sending a byte every 50ms
// never let the stall timer fire (each byte restarted it), keeping a
// download alive forever; now each StallTimeout window must bring MinRate.
func TestTrickleCannotKeepADownloadAlive(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000000")
		w.Header().Set("ETag", `"t"`)
		for range 1_000_000 {
			if _, err := w.Write([]byte{'x'}); err != nil {
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
	defer srv.Close()
	o := opts(t, srv.URL+"/m.gguf")
	o.StallTimeout, o.Retries = 300*time.Millisecond, 0
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := Fetch(ctx, o)
	if err == nil || !strings.Contains(err.Error(), "less than 307 B in 300ms (under 1.0 KiB/s, the --min-rate floor)") {
		t.Errorf("want the trickle cut off by the minimum rate: %v", err)
	}
}

// TestResumeOnlyTheSameVersion: a server that ignores If-Range answers a
// resume with 206 and the rest of a newer file; taking it appended v2's
// bytes to v1's. The part is kept only when the ETag matches; otherwise it
// is dropped and the file fetched whole.
func TestResumeOnlyTheSameVersion(t *testing.T) {
	v1, v2 := payload(400_000, 7), payload(400_000, 8)
	var rec recorder
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rec.add(r) == 1 {
			cut(w, v1, 100_000, `"v1"`)
			return
		}
		// Range honoured, If-Range ignored: the rest of v2.
		w.Header().Set("ETag", `"v2"`)
		r.Header.Del("If-Range")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(v2))
	}))
	defer srv.Close()
	o := opts(t, srv.URL+"/m.gguf")
	var out bytes.Buffer
	o.Printer = printer.New(&out, &out, "", false)
	res, err := Fetch(context.Background(), o)
	if err != nil || res.SHA256 != sum(v2) {
		t.Fatalf("want v2 whole: %+v %v\n%s", res, err, out.String())
	}
	if !strings.Contains(out.String(), `the server resumed a different version of the file (ETag "v2"); starting over`) {
		t.Errorf("the mismatch is not said:\n%s", out.String())
	}
}

// TestControlCharactersInTheFileName: %0A or %00 in a URL's last element
// decode to control characters in the file name it gives; refused.
func TestControlCharactersInTheFileName(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("x")) }))
	defer srv.Close()
	for _, p := range []string{"/a%0Ab.gguf", "/a%00b.gguf", "/a%1Bb.gguf"} {
		o := opts(t, srv.URL+p)
		o.Retries = 0
		_, err := Fetch(context.Background(), o)
		var fe *Error
		if !errors.As(err, &fe) || fe.Kind != BadURL || !strings.Contains(err.Error(), "control characters") {
			t.Errorf("%s: %v", p, err)
		}
	}

}
