package router

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/connlimit"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

// readyBackend is a supervisor whose instances all run.
type readyBackend struct{ ins []config.Instance }

func (readyBackend) Start(string) error { return nil }
func (readyBackend) Stop(string) error  { return nil }
func (readyBackend) Subscribe() (<-chan supervise.Event, func()) {
	return make(chan supervise.Event), func() {}
}
func (b readyBackend) Snapshots() []supervise.Snapshot {
	var out []supervise.Snapshot
	for _, in := range b.ins {
		out = append(out, supervise.Snapshot{Spec: in, State: supervise.Ready, WantUp: true})
	}
	return out
}

// listening starts a router in front of one upstream.
func listening(t testing.TB, keys []string, opts ...Options) (*Server, *httptest.Server) {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"auth":%q}`, r.Header.Get("Authorization"))
	}))
	t.Cleanup(up.Close)
	port := up.Listener.Addr().(*net.TCPAddr).Port
	in := config.Instance{Name: "a", Host: "127.0.0.1", Port: port, Routing: config.Routing{APIKey: "up"}}
	tb := NewTable(&config.Router{Listen: "127.0.0.1:0", MaxWait: time.Minute, MaxQueue: 10, Keys: keys}, []config.Instance{in})
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	r := New(readyBackend{[]config.Instance{in}}, tb, o)
	t.Cleanup(r.Close)
	srv, err := r.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv, up
}

// The listener closes connections over its cap, and those that send no
// request head in time.
func TestServerHardening(t *testing.T) {
	oldLimits, oldHeader := ConnLimits, readHeaderTimeout
	ConnLimits, readHeaderTimeout = connlimit.Limits{Max: 2}, 300*time.Millisecond
	t.Cleanup(func() { ConnLimits, readHeaderTimeout = oldLimits, oldHeader })
	srv, _ := listening(t, nil)
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	// Over the cap: closed at once (reset), with no answer.
	if c, err := net.Dial("tcp", srv.Addr()); err == nil {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n{\"model\":\"a\"}")
		if n, err := c.Read(make([]byte, 1)); err == nil || n != 0 || os.IsTimeout(err) {
			t.Errorf("a connection over the cap was not closed (%d, %v)", n, err)
		}
	}
	// The two held ones send nothing: closed after the header timeout.
	began := time.Now()
	for _, c := range held {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Errorf("a silent connection was not closed: %v", err)
		}
	}
	if took := time.Since(began); took > 3*time.Second {
		t.Errorf("silent connections closed after %s", took)
	}
	// Room again: a request is served.
	c2, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	fmt.Fprintf(c2, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n{\"model\":\"a\"}")
	resp, err := http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the silent ones left: %v %v", resp, err)
	}
}

// The client's key never reaches the server: the router swaps in the
// server's own.
func TestKeysAreSwapped(t *testing.T) {
	srv, _ := listening(t, []string{"client"})
	req, _ := http.NewRequest("POST", "http://"+srv.Addr()+"/v1/completions", strings.NewReader(`{"model":"a"}`))
	req.Header.Set("Authorization", "Bearer client")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != `{"auth":"Bearer up"}` {
		t.Errorf("the server got %s", b)
	}
	tb := NewTable(&config.Router{Keys: []string{"k1", "k2"}}, nil)
	for key, want := range map[string]bool{"k1": true, "k2": true, "k": false, "k12": false, "": false} {
		if tb.Allowed(key) != want {
			t.Errorf("Allowed(%q) = %v", key, !want)
		}
	}
}

// Bodies over the cap are refused (413); with one instance a body that
// names no model goes to it; a body that is no JSON object is a 400.
func TestBodies(t *testing.T) {
	srv, _ := listening(t, nil, Options{MaxBody: 1024})
	for body, want := range map[string]int{
		`{"model":"a","prompt":"` + strings.Repeat("x", 2000) + `"}`: 413,
		`{"prompt":"no model"}`: 200,
		`{"model":"a"}`:         200,
		`[1,2]`:                 400,
		`{"model":"b"}`:         404,
	} {
		resp, err := http.Post("http://"+srv.Addr()+"/completion", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%.40s…: %d, want %d", body, resp.StatusCode, want)
		}
	}
}
