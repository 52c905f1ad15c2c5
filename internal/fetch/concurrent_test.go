package fetch

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/dirs"
)

// TestTwoDownloadsOfOneFile: two fetchers of one destination (fetch-models
// beside entry, two replicas on a shared volume) resuming one .part must not
// both append to it. Found by review: the file came out 6.9 MB instead of
// 4 MB while the marker vouched for the pin.
func TestTwoDownloadsOfOneFile(t *testing.T) {
	body := payload(4<<20, 3)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := 0
		if rg := r.Header.Get("Range"); rg != "" {
			start, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(body)-1, len(body)))
		}
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)-start))
		if start > 0 {
			w.WriteHeader(http.StatusPartialContent)
		}
		// Slow enough that the two fetchers overlap.
		for off := start; off < len(body); off += 256 << 10 {
			w.Write(body[off:min(off+256<<10, len(body))])
			w.(http.Flusher).Flush()
			time.Sleep(20 * time.Millisecond)
		}
	}))
	defer srv.Close()
	o := opts(t, srv.URL+"/model.gguf")
	o.SHA256 = sum(body)
	// An interrupted earlier download left a resumable part.
	os.MkdirAll(strings.TrimSuffix(o.Dest, "/file.bin"), 0o755)
	os.WriteFile(o.Dest+".part", body[:1<<20], 0o644)
	writeStateAt(t, o.Dest+".part", partState{URL: Redact(o.URL), Name: "model.gguf", ETag: `"v1"`, Total: int64(len(body))})

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = Fetch(context.Background(), o)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("fetcher %d: %v", i, err)
		}
	}
	got, err := SumFile(o.Dest)
	if err != nil || got != sum(body) {
		fi, _ := os.Stat(o.Dest)
		t.Fatalf("the file in place does not hash to the pin (%v, size %v)", err, fi.Size())
	}
}

// TestUnaskedPartialContent: a 206 to a request for the whole file is not
// the whole file.
func TestUnaskedPartialContent(t *testing.T) {
	body := payload(1000, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes 100-999/%d", len(body)))
		w.Header().Set("Content-Length", "900")
		w.WriteHeader(http.StatusPartialContent)
		w.Write(body[100:])
	}))
	defer srv.Close()
	o := opts(t, srv.URL+"/model.gguf")
	o.Retries = 1
	_, err := Fetch(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "206 Partial Content") {
		t.Fatalf("want a refusal of the unasked 206, got %v", err)
	}
	if _, err := os.Stat(o.Dest); err == nil {
		t.Error("a file cut short was put in place")
	}
}

// TestSumFileRefusesFIFO: a FIFO planted where a model should be must not
// block the check forever.
func TestSumFileRefusesFIFO(t *testing.T) {
	p := t.TempDir() + "/model.gguf"
	if err := mkfifo(p); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := SumFile(p); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a FIFO was hashed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SumFile blocked on a FIFO")
	}
}

func mkfifo(p string) error { return syscall.Mkfifo(p, 0o644) }

// writeStateAt writes the .part.json of the part file at p, as a run that
// was cut would have left it.
func writeStateAt(t *testing.T, p string, st partState) {
	t.Helper()
	d, err := dirs.Open(filepath.Dir(p))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := writeState(sideFiles{dir: d, name: filepath.Base(p)}, st); err != nil {
		t.Fatal(err)
	}
}

// TestSumFileNeverFollowsALink: the hash before a model is reused once
// opened its path plainly: a link at the name (to a root-only file whose
// digest is the pin, or to /dev/zero) was followed, and a dir link a user
// planted on the way too. Both are refused now, as every side file is.
func TestSumFileNeverFollowsALink(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("root only\n"), 0o600)
	link := filepath.Join(dir, "model.gguf")
	os.Symlink(secret, link)
	var nr *dirs.NotRegularError
	if _, err := SumFile(link); !errors.As(err, &nr) {
		t.Errorf("a link at the model's name: want it refused as not a regular file, got %v", err)
	}
	if os.Getuid() != 0 {
		t.Fatal("the rest needs root (CI runs as root) to plant a link as uid 1000")
	}
	vol := filepath.Join(dir, "vol")
	os.Mkdir(vol, 0o755)
	os.Chown(vol, 1000, 1000)
	os.WriteFile(filepath.Join(dir, "model.gguf.real"), []byte("x"), 0o644)
	dlink := filepath.Join(vol, "models")
	os.Symlink(dir, dlink)
	os.Lchown(dlink, 1000, 1000)
	var le *dirs.LinkError
	if _, err := SumFile(filepath.Join(dlink, "model.gguf.real")); !errors.As(err, &le) {
		t.Errorf("a dir link uid 1000 owns on the way: want it refused, got %v", err)
	}
}
