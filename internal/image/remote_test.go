package image

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
	"github.com/llamaboot/llamaboot/internal/imagegen"
)

// A registry named by a private-range address is spoken to over plain
// HTTP (as go-containerregistry chooses for such names), but llamaboot
// refuses to send it anything: only loopback gets HTTP without TLS. The
// refusal is bad input naming why, and no request leaves.
func TestRegistryPlainHTTPOnlyToLoopback(t *testing.T) {
	for _, reg := range []string{"10.1.2.3:5000", "192.168.0.1", "172.20.0.1:443"} {
		t.Run(reg, func(t *testing.T) {
			var sent []string
			rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
				sent = append(sent, r.URL.String())
				return nil, errors.New("the test's transport answers nothing")
			})
			r, err := Parse("docker://" + reg + "/org/llama:b1")
			if err != nil {
				t.Fatal(err)
			}
			if r.Remote.Scheme() != "http" {
				t.Fatalf("%s: scheme %s, want http (the case this test is about)", reg, r.Remote.Scheme())
			}
			_, err = Open(context.Background(), r, Options{CacheDir: t.TempDir(), Transport: rt})
			var ie *Error
			if err == nil || !errors.As(err, &ie) || !ie.BadInput() || !strings.Contains(err.Error(), "plain HTTP to "+reg+" refused: only registries on loopback") {
				t.Fatalf("got %v, want bad input refusing plain HTTP to %s", err, reg)
			}
			if len(sent) != 0 {
				t.Errorf("requests left for %s: %v", reg, sent)
			}
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Layers are fetched side by side, never more at once than Jobs: the
// registry holds each layer request until Jobs of them are in flight (a
// generous deadline is the last guard), and counts the most at once.
// A correct bound passes whatever the timing.
func TestLayerFetchesAreConcurrentAndBounded(t *testing.T) {
	const jobs, layers = 2, 6
	var ls []v1.Layer
	layerDigests := map[string]bool{}
	for i := range layers {
		es := []bundlegen.Entry{bundlegen.Dir("app/"), bundlegen.File(fmt.Sprintf("app/f%d", i), 0o644, strings.Repeat("x", i+1))}
		if i == 0 {
			es = append(es, bundlegen.File("app/llama-server", 0o755, "srv"))
		}
		l, err := imagegen.NewLayer(archive.Gzip, es)
		if err != nil {
			t.Fatal(err)
		}
		d, _ := l.Digest()
		layerDigests[d.String()] = true
		ls = append(ls, l)
	}
	img, err := imagegen.Image("linux/"+runtime.GOARCH, nil, ls...)
	if err != nil {
		t.Fatal(err)
	}
	inner := imagegen.Registry()
	defer inner.Close()
	var mu sync.Mutex
	inFlight, most, waitedOut := 0, 0, false
	full := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := strings.LastIndex(r.URL.Path, "/blobs/")
		if r.Method != http.MethodGet || i < 0 || !layerDigests[r.URL.Path[i+len("/blobs/"):]] {
			inner.Config.Handler.ServeHTTP(w, r)
			return
		}
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		if inFlight == jobs {
			// Jobs at once: held a little longer, so that fetches beyond
			// the bound, were any started, pile up here and are counted.
			// (A window for a fault to show, not a wait the test needs.)
			time.AfterFunc(300*time.Millisecond, func() { once.Do(func() { close(full) }) })
		}
		mu.Unlock()
		select {
		case <-full:
		case <-time.After(60 * time.Second):
			// Never Jobs at once: fail, and hold no other request.
			mu.Lock()
			waitedOut = true
			mu.Unlock()
			once.Do(func() { close(full) })
		}
		inner.Config.Handler.ServeHTTP(w, r)
		mu.Lock()
		inFlight--
		mu.Unlock()
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	if err := imagegen.Push(host+"/org/llama:b1", img); err != nil {
		t.Fatal(err)
	}
	ref, err := Parse("docker://" + host + "/org/llama:b1")
	if err != nil {
		t.Fatal(err)
	}
	im, err := Open(context.Background(), ref, Options{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := im.Extract(context.Background(), root, dir, ExtractOptions{Path: DefaultPath, Jobs: jobs}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if waitedOut {
		t.Errorf("never %d layer fetches at once: fetched one after another", jobs)
	}
	if most > jobs {
		t.Errorf("%d layer fetches at once, want at most %d", most, jobs)
	}
	for i := range layers {
		if _, err := root.Stat(fmt.Sprintf("f%d", i)); err != nil {
			t.Errorf("layer %d not applied: %v", i, err)
		}
	}
}
