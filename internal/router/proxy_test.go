package router

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
)

// routerTo starts a router in front of one upstream handler.
func routerTo(t *testing.T, h http.Handler) (*Router, string) {
	t.Helper()
	up := httptest.NewServer(h)
	t.Cleanup(up.Close)
	in := config.Instance{Name: "a", Host: "127.0.0.1", Port: up.Listener.Addr().(*net.TCPAddr).Port}
	tb := NewTable(&config.Router{Listen: "127.0.0.1:0", MaxWait: time.Minute, MaxQueue: 10}, []config.Instance{in})
	r := New(readyBackend{[]config.Instance{in}}, tb, Options{Metrics: NewMetrics()})
	t.Cleanup(r.Close)
	srv, err := r.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return r, "http://" + srv.Addr()
}

// writeCounter counts the writes on a connection.
type writeCounter struct {
	net.Conn
	n *atomic.Int64
}

func (c writeCounter) Write(b []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(b)
}

// A routed request reaches the instance in one write, head and body
// together (net/http flushes the head alone before a body it does not
// know is in memory: a second system call each side per request).
func TestRoutedRequestIsOneWrite(t *testing.T) {
	r, base := routerTo(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		w.Write(b)
	}))
	var writes atomic.Int64
	r.proxy.tr.(*transport).wrap = func(c net.Conn) net.Conn { return writeCounter{c, &writes} }
	for i := range 5 {
		body := fmt.Sprintf(`{"model":"a","prompt":"%d %s"}`, i, strings.Repeat("x", 1000*i))
		resp, err := http.Post(base+"/completion", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) != body {
			t.Fatalf("request %d: the instance got %q", i, got)
		}
		if n := writes.Swap(0); n != 1 {
			t.Errorf("request %d (%d bytes) was sent to the instance in %d writes, want 1", i, len(body), n)
		}
	}
}

// Concurrent requests each reach the instance with their own body: the
// buffers bodies are read into are reused only once a request is done.
func TestRoutedBodiesUnderConcurrency(t *testing.T) {
	_, base := routerTo(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		fmt.Fprintf(w, "%x", sha256.Sum256(b))
	}))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for i := range 50 {
				// Sizes on both sides of the pooled buffer's.
				pad := strings.Repeat(string(rune('a'+rng.IntN(26))), rng.IntN(2*pooledBody))
				body := fmt.Sprintf(`{"model":"a","g":%d,"i":%d,"pad":"%s"}`, g, i, pad)
				resp, err := client.Post(base+"/v1/completions", "application/json", strings.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if want := fmt.Sprintf("%x", sha256.Sum256([]byte(body))); string(got) != want {
					errs <- fmt.Errorf("client %d request %d (%d bytes): the instance got another body", g, i, len(body))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A stream passes through event by event: the instance sends its next
// event only once the client has read the one before, so an answer held
// back anywhere on the way stalls the test (and fails at its guard).
func TestStreamFlushedPerEvent(t *testing.T) {
	read := make(chan int)
	_, base := routerTo(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 5 {
			fmt.Fprintf(w, "data: {\"n\":%d}\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case got := <-read:
				if got != i {
					return
				}
			case <-req.Context().Done():
				return
			}
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
	}))
	// A guard only: each event comes at once when it is flushed.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/chat/completions", strings.NewReader(`{"model":"a","stream":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("no answer head: %v (the stream is buffered)", err)
	}
	defer resp.Body.Close()
	events := make(chan string)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if sc.Text() != "" {
				events <- sc.Text()
			}
		}
	}()
	for i := range 5 {
		select {
		case ev := <-events:
			if want := fmt.Sprintf(`data: {"n":%d}`, i); ev != want {
				t.Fatalf("event %d: %q, want %q", i, ev, want)
			}
			read <- i
		case <-ctx.Done():
			t.Fatalf("event %d never came through: the stream is buffered", i)
		}
	}
	if ev := <-events; ev != "data: [DONE]" {
		t.Errorf("last event %q", ev)
	}
}

// A non-streamed answer reaches the client whole with its length.
func TestAnswerKeepsItsLength(t *testing.T) {
	answer := bytes.Repeat([]byte("y"), 100<<10)
	_, base := routerTo(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(answer)))
		w.Write(answer)
	}))
	resp, err := http.Post(base+"/v1/embeddings", "application/json", strings.NewReader(`{"model":"a"}`))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ContentLength != int64(len(answer)) || !bytes.Equal(got, answer) {
		t.Errorf("answer: length %d (header %d), want %d", len(got), resp.ContentLength, len(answer))
	}
}
