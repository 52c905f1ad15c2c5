package models

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/fetch"
	"github.com/llamaboot/llamaboot/internal/printer"
)

// modelServer serves named files with ETags and records each request.
type modelServer struct {
	*httptest.Server
	mu    sync.Mutex
	files map[string][]byte
	hits  map[string]int
	auth  map[string][]string
	// gate, when set, holds every response until it is closed.
	gate chan struct{}
}

func newModelServer(t *testing.T, files map[string][]byte) *modelServer {
	s := &modelServer{files: files, hits: map[string]int{}, auth: map[string][]string{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits[r.URL.Path]++
		s.auth[r.URL.Path] = append(s.auth[r.URL.Path], r.Header.Get("Authorization"))
		body, ok := s.files[r.URL.Path]
		gate := s.gate
		s.mu.Unlock()
		if gate != nil {
			<-gate
		}
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", `"`+sum(body)[:16]+`"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *modelServer) hitCount(p string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[p]
}

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

func gguf(n int, seed byte) []byte {
	b := []byte("GGUF")
	for i := 4; i < n; i++ {
		b = append(b, byte(i*7)^seed)
	}
	return b
}

func plan(t *testing.T, dir, toml string) *config.Plan {
	t.Helper()
	p, err := config.Parse("cfg.toml", []byte(toml), config.Options{AppDir: dir, ModelsDir: filepath.Join(dir, "models")})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func opts(out *bytes.Buffer) Options {
	p := printer.Discard()
	if out != nil {
		p = printer.New(out, out, "[models]", false)
	}
	return Options{Printer: p, Download: fetch.Options{Retries: 1, RetryBase: 10 * time.Millisecond}}
}

// TestSplitsSharedOnceAndOffline: the parts of a split model are all
// fetched, a model shared by two instances is fetched once, and a second
// run with the server gone uses the files through their markers.
func TestSplitsSharedOnceAndOffline(t *testing.T) {
	parts := map[string][]byte{
		"/r/big-00001-of-00003.gguf": gguf(300_000, 1),
		"/r/big-00002-of-00003.gguf": gguf(300_000, 2),
		"/r/big-00003-of-00003.gguf": gguf(100_000, 3),
		"/r/small.gguf":              gguf(50_000, 4),
	}
	srv := newModelServer(t, parts)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`
[models.big]
url = "%[1]s/r/big-00001-of-00003.gguf"
sha256 = ["%[2]s", "%[3]s", "%[4]s"]

[instance.a.server]
port = 1
model = "models.big"
[instance.b.server]
port = 2
model = "models.big"
[instance.c.server]
port = 3
model = "%[1]s/r/small.gguf"
[instance.d.server]
port = 4
model = "/local/path.gguf"
`, srv.URL, sum(parts["/r/big-00001-of-00003.gguf"]), sum(parts["/r/big-00002-of-00003.gguf"]), sum(parts["/r/big-00003-of-00003.gguf"]))
	pl := plan(t, dir, cfg)
	f := New(pl.Instances, opts(nil))
	var mu sync.Mutex
	ready := map[string]error{}
	failed := f.Run(context.Background(), func(name string, err error) {
		mu.Lock()
		ready[name] = err
		mu.Unlock()
	})
	if len(failed) != 0 || len(ready) != 3 || ready["a"] != nil || ready["c"] != nil {
		t.Fatalf("failed %v ready %v", failed, ready)
	}
	if _, waited := ready["d"]; waited || f.Waiting("d") {
		t.Error("an instance with a local model was reported as waiting")
	}
	for p, body := range parts {
		got, err := os.ReadFile(filepath.Join(dir, "models", filepath.Base(p)))
		if err != nil || !bytes.Equal(got, body) {
			t.Errorf("%s: %v", p, err)
		}
		if n := srv.hitCount(p); n != 1 {
			t.Errorf("%s requested %d times, want once", p, n)
		}
	}
	for _, d := range f.Status() {
		if d.State != Done || d.DoneBytes != d.Total || d.Total <= 0 {
			t.Errorf("status %+v", d)
		}
		if strings.Contains(d.File, "big") && strings.Join(d.Instances, ",") != "a,b" {
			t.Errorf("shared file users %v", d.Instances)
		}
	}
	if got := pl.MissingModels(nil); len(got) != 1 || !strings.Contains(got[0].Key, "instance.d.") {
		t.Errorf("after the download only d's local file should be missing: %v", got)
	}

	srv.Close() // offline second boot
	var out bytes.Buffer
	f = New(pl.Instances, opts(&out))
	if failed := f.Run(context.Background(), nil); len(failed) != 0 {
		t.Fatalf("offline boot: %v\n%s", failed, out.String())
	}
	if strings.Count(out.String(), "server not contacted") != 4 {
		t.Errorf("offline boot output:\n%s", out.String())
	}
}

// TestChecksumMismatchRemovesTheFile: a wrong pin leaves no file and no
// part, fails only its instance, and is bad input.
func TestChecksumMismatchRemovesTheFile(t *testing.T) {
	srv := newModelServer(t, map[string][]byte{"/m.gguf": gguf(10_000, 5), "/ok.gguf": gguf(10_000, 6)})
	dir := t.TempDir()
	pl := plan(t, dir, fmt.Sprintf(`
[instance.bad.control]
model_sha256 = "%s"
[instance.bad.server]
port = 1
model = "%s/m.gguf"
[instance.good.server]
port = 2
model = "%s/ok.gguf"
`, strings.Repeat("0", 64), srv.URL, srv.URL))
	failed := New(pl.Instances, opts(nil)).Run(context.Background(), nil)
	if len(failed) != 1 || failed["bad"] == nil || !BadInput(failed) {
		t.Fatalf("failed = %v", failed)
	}
	if !strings.Contains(failed["bad"].Error(), "checksum mismatch") || !strings.Contains(failed["bad"].Error(), "fix sha256 / model_sha256") {
		t.Errorf("message: %v", failed["bad"])
	}
	m := filepath.Join(dir, "models", "m.gguf")
	for _, p := range []string{m, m + ".part", MarkerPath(m)} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left behind", p)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "models", "ok.gguf")); err != nil {
		t.Errorf("the other instance's model: %v", err)
	}
}

// TestTokenOnlyToTheModelHost: the token goes to the model's host, not to
// the host it redirects to, and appears in no output or marker.
func TestTokenOnlyToTheModelHost(t *testing.T) {
	cdn := newModelServer(t, map[string][]byte{"/blob/m.gguf": gguf(20_000, 7)})
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer hf_SECRET" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		http.Redirect(w, r, cdn.URL+"/blob/m.gguf", http.StatusFound)
	}))
	defer hub.Close()
	dir := t.TempDir()
	pl := plan(t, dir, fmt.Sprintf("[instance.a.server]\nmodel = %q\n", hub.URL+"/org/repo/resolve/main/m.gguf"))
	var out bytes.Buffer
	o := opts(&out)
	o.Token = "hf_SECRET"
	if failed := New(pl.Instances, o).Run(context.Background(), nil); len(failed) != 0 {
		t.Fatal(failed)
	}
	if got := cdn.auth["/blob/m.gguf"]; len(got) != 1 || got[0] != "" {
		t.Errorf("the CDN got Authorization %q", got)
	}
	marker, _ := os.ReadFile(MarkerPath(filepath.Join(dir, "models", "m.gguf")))
	if strings.Contains(out.String()+string(marker), "hf_SECRET") {
		t.Error("token printed or stored")
	}
	// Without the token: a clear 401 naming the variable.
	o.Token = ""
	o.Refresh = true
	failed := New(pl.Instances, o).Run(context.Background(), nil)
	if err := failed["a"]; err == nil || !strings.Contains(err.Error(), "HTTP 401") || !strings.Contains(err.Error(), "AUTO_INFER_MODEL_TOKEN") {
		t.Errorf("401: %v", err)
	}
}

// TestProgressWhileDownloading: a slow server's download shows as
// downloading with bytes, total and rate; the parallel bound holds.
func TestProgressWhileDownloading(t *testing.T) {
	body := gguf(2<<20, 8)
	var sent sync.WaitGroup
	sent.Add(1)
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Write(body[:1<<20])
		w.(http.Flusher).Flush()
		sent.Done()
		<-release
		w.Write(body[1<<20:])
	}))
	defer slow.Close()
	other := newModelServer(t, map[string][]byte{"/x.gguf": gguf(1000, 9)})
	dir := t.TempDir()
	pl := plan(t, dir, fmt.Sprintf("[instance.a.server]\nport=1\nmodel = %q\n[instance.b.server]\nport=2\nmodel = %q\n", slow.URL+"/slow.gguf", other.URL+"/x.gguf"))
	o := opts(nil)
	o.Parallel = 1
	f := New(pl.Instances, o)
	other.mu.Lock()
	other.gate = release // b's file may not even be asked for while a's runs
	other.mu.Unlock()
	done := make(chan map[string]error)
	go func() { done <- f.Run(context.Background(), nil) }()
	sent.Wait()
	var st []Download
	deadline := time.Now().Add(10 * time.Second)
	for {
		st = f.Status()
		if st[0].State == Downloading && st[0].DoneBytes == 1<<20 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st[0].State != Downloading || st[0].DoneBytes != 1<<20 || st[0].Total != int64(len(body)) || st[0].Rate <= 0 || st[0].ETA <= 0 {
		t.Errorf("status while downloading: %+v", st[0])
	}
	if st[1].State != Queued || other.hitCount("/x.gguf") != 0 {
		t.Errorf("with --parallel 1 the second file must wait: %+v, %d requests", st[1], other.hitCount("/x.gguf"))
	}
	close(release)
	if failed := <-done; len(failed) != 0 {
		t.Fatal(failed)
	}
}

// TestCancelledRunFailsEveryWaitingInstance: cancelling stops the running
// downloads and fails what is left, with context.Canceled.
func TestCancelledRunFailsEveryWaitingInstance(t *testing.T) {
	srv := newModelServer(t, map[string][]byte{"/a.gguf": gguf(1000, 1)})
	srv.gate = make(chan struct{})
	defer close(srv.gate)
	dir := t.TempDir()
	pl := plan(t, dir, fmt.Sprintf("[instance.a.server]\nmodel = %q\n", srv.URL+"/a.gguf"))
	ctx, cancel := context.WithCancel(context.Background())
	f := New(pl.Instances, opts(nil))
	done := make(chan map[string]error)
	go func() { done <- f.Run(ctx, nil) }()
	for srv.hitCount("/a.gguf") == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	failed := <-done
	if !errors.Is(failed["a"], context.Canceled) {
		t.Errorf("failed = %v", failed)
	}
}

// TestTokensScopedToHosts: with one Hugging Face model and one on another
// server, AUTO_INFER_MODEL_TOKEN went to both. Now it goes only to the
// hosts named in AUTO_INFER_MODEL_TOKEN_HOSTS (or the one host all models
// share), a model's token_env names its own token, and HF_TOKEN goes to
// Hugging Face hosts only.
func TestTokensScopedToHosts(t *testing.T) {
	a := newModelServer(t, map[string][]byte{"/a.gguf": gguf(5_000, 1)})
	b := newModelServer(t, map[string][]byte{"/b.gguf": gguf(5_000, 2)})
	// "huggingface.co" reaches a loopback server: the client dials it
	// whatever the host.
	hf := newModelServer(t, map[string][]byte{"/h.gguf": gguf(5_000, 3)})
	hfAddr := strings.TrimPrefix(hf.URL, "http://")
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if strings.HasPrefix(addr, "huggingface.co:") {
			addr = hfAddr
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}}
	env := map[string]string{"B_TOKEN": "tok-b", "HF_TOKEN": "hf-tok"}
	for _, c := range []struct {
		name       string
		tokenEnvB  bool
		hosts      []string
		wantA      string
		wantB      string
		wantHF     string
		wantUnused bool
	}{
		{name: "several hosts, none named: the global token goes nowhere", wantHF: "Bearer hf-tok", wantUnused: true},
		{name: "named hosts only", hosts: []string{strings.TrimPrefix(a.URL, "http://")}, wantA: "Bearer global", wantHF: "Bearer hf-tok"},
		{name: "token_env for its model only", tokenEnvB: true, wantB: "Bearer tok-b", wantHF: "Bearer hf-tok", wantUnused: true},
		{name: "the HF host named gets the global token", hosts: []string{"huggingface.co"}, wantHF: "Bearer global"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			tokenEnv := ""
			if c.tokenEnvB {
				tokenEnv = "token_env = \"B_TOKEN\"\n"
			}
			pl := plan(t, dir, fmt.Sprintf("[models.b]\nurl = %q\n%s[instance.a.server]\nport = 1\nmodel = %q\n[instance.b.server]\nport = 2\nmodel = \"models.b\"\n[instance.h.server]\nport = 3\nmodel = %q\n",
				b.URL+"/b.gguf", tokenEnv, a.URL+"/a.gguf", "http://huggingface.co/h.gguf"))
			var out bytes.Buffer
			o := opts(&out)
			o.Token, o.TokenHosts, o.Getenv = "global", c.hosts, func(k string) string { return env[k] }
			o.Download.Client = client
			o.Refresh = true
			if failed := New(pl.Instances, o).Run(context.Background(), nil); len(failed) != 0 {
				t.Fatal(failed)
			}
			for _, got := range []struct {
				s       *modelServer
				p, want string
			}{{a, "/a.gguf", c.wantA}, {b, "/b.gguf", c.wantB}, {hf, "/h.gguf", c.wantHF}} {
				got.s.mu.Lock()
				auth := got.s.auth[got.p]
				got.s.auth[got.p] = nil
				got.s.mu.Unlock()
				if len(auth) == 0 || auth[len(auth)-1] != got.want {
					t.Errorf("%s got Authorization %q, want %q", got.p, auth, got.want)
				}
			}
			if unused := strings.Contains(out.String(), "AUTO_INFER_MODEL_TOKEN is sent to no model host"); unused != c.wantUnused {
				t.Errorf("warning said %v, want %v:\n%s", unused, c.wantUnused, out.String())
			}
		})
	}
}
