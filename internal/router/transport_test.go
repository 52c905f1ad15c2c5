package router

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingServer counts the connections it accepts.
func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func post(t *testing.T, tr *transport, url, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestTransportKeepsConnectionsAlive(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s", r.URL.Path, b)
	})
	tr := newTransport()
	for i := range 20 {
		_, got := post(t, tr, srv.URL+"/x", fmt.Sprint(i))
		if got != fmt.Sprintf("/x %d", i) {
			t.Fatalf("answer %d: %q", i, got)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 20 requests in a row, want 1", n)
	}
}

// A kept-alive connection the server closed is replaced, and the request
// (its body sent again) succeeds.
func TestTransportRetriesOnAClosedIdleConnection(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	tr := newTransport()
	// Three connections in the pool, all closed by the server at once (a
	// restarted instance).
	var open []*http.Response
	for range 3 {
		req, _ := http.NewRequest("POST", srv.URL, strings.NewReader("held"))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, resp)
	}
	for _, resp := range open {
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	srv.CloseClientConnections()
	time.Sleep(20 * time.Millisecond)
	if _, got := post(t, tr, srv.URL, "two"); got != "two" {
		t.Fatalf("after the server closed the idle connection: %q", got)
	}
	if n := conns.Load(); n != 4 {
		t.Errorf("%d connections, want 4", n)
	}
}

// Connection: close, and a body closed before its end, are not reused.
func TestTransportDropsUnfinishedConnections(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		w.Write([]byte(strings.Repeat("x", 100_000)))
	})
	tr := newTransport()
	post(t, tr, srv.URL+"/close", "")
	req, _ := http.NewRequest("GET", srv.URL+"/big", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Read(make([]byte, 10))
	resp.Body.Close() // early: the rest is still on the wire
	post(t, tr, srv.URL+"/big", "")
	if n := conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3 (none reusable)", n)
	}
}

// A streamed answer comes as the server writes it, and a cancel ends the
// exchange and the connection at once.
func TestTransportStreamsAndCancels(t *testing.T) {
	gone := make(chan struct{})
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; ; i++ {
			if _, err := fmt.Fprintf(w, "data: %d\n\n", i); err != nil {
				break
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				close(gone)
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	tr := newTransport()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := resp.Body.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "data: 0") {
		t.Fatalf("first event: %q %v", buf[:n], err)
	}
	cancel()
	readErr := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(resp.Body)
		readErr <- err
	}()
	select {
	case err := <-readErr:
		if err == nil {
			t.Error("read after cancel: no error")
		}
	case <-time.After(5 * time.Second):
		resp.Body.Close() // so the server's handler ends
		t.Fatal("reading goes on after the cancel")
	}
	resp.Body.Close()
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the server never saw the cancel")
	}
}

// Closing a stream before its end (the client went away, ReverseProxy
// gives up) returns at once and the server sees its client go: it never
// waits for a stream that may not end.
func TestTransportCloseDoesNotDrainAStream(t *testing.T) {
	gone := make(chan struct{})
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		defer close(gone)
		for {
			if _, err := fmt.Fprint(w, "data: x\n\n"); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	resp, err := newTransport().RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Read(make([]byte, 16))
	closed := make(chan struct{})
	go func() {
		resp.Body.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		cancel() // unblocks it, so the server's handler can end
		t.Fatal("Close waits for the stream to end")
	}
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the server never saw its client go")
	}
}

// 32 clients at once through the transport use at most 32 connections:
// each goes back to the pool when its answer is read, and the pool keeps
// enough per host (net/http's default of 2 idle per host would close and
// dial again all the time).
func TestTransportKeepsConcurrentConnections(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, "ok")
	})
	tr := newTransport()
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range 30 {
				req, _ := http.NewRequest("POST", srv.URL, strings.NewReader("x"))
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Error(err)
					return
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(got) != "ok" {
					t.Errorf("answer %q", got)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := conns.Load(); n > 32 {
		t.Errorf("%d connections for 32 clients' 960 requests, want at most 32", n)
	}
}
