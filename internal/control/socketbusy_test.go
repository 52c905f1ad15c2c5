package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/connlimit"
	"github.com/llamaboot/llamaboot/internal/supervise"
	"github.com/llamaboot/llamaboot/internal/testutil"
)

// TestBusyRefusalRetried: a client refused at accept for being over the
// cap is answered "busy" (not a bare close, once read as "no supervisor
// is running") and tries again: once the connection holding the only
// place closes, a status (GET) and a control request (POST, its body sent
// again) both get through; kept full, the client reports the refusal.
func TestBusyRefusalRetried(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	cl := connlimit.New(ln, connlimit.Limits{Max: 1}, connlimit.UIDPeer)
	cl.Refuse = refuseBusy
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hold", func(w http.ResponseWriter, r *http.Request) { <-release })
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, Status{}) })
	mux.HandleFunc("POST /control", func(w http.ResponseWriter, r *http.Request) {
		var req ControlRequest
		if decode(w, r, &req) {
			writeJSON(w, http.StatusOK, Reply{Lines: []string{req.Name + ": " + req.Op}})
		}
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(cl)
	defer srv.Close()

	hold := func() {
		go func() {
			c := client(sock)
			if resp, err := c.Get("http://llamaboot/hold"); err == nil {
				resp.Body.Close()
			}
			c.CloseIdleConnections() // as a client process ends
		}()
		testutil.WaitFor(t, "the held connection", 10*time.Second, func() bool { return cl.Open() == 1 })
	}

	// Full for good: the refusal is reported, with why.
	hold()
	_, err = GetStatus(sock)
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != codeBusy || re.Msg != "busy: 1 connections are open; the cap is 1" || errors.Is(err, ErrNoSupervisor) {
		t.Fatalf("kept full: %v", err)
	}

	// Freed while the clients retry: both get through.
	type res struct {
		lines []string
		err   error
	}
	got := make(chan res, 2)
	before := cl.Refused()
	go func() { _, err := GetStatus(sock); got <- res{nil, err} }()
	go func() { l, err := Control(sock, supervise.OpRestart, "a", false); got <- res{l, err} }()
	testutil.WaitFor(t, "both clients refused", 10*time.Second, func() bool { return cl.Refused() >= before+2 })
	close(release)
	for range 2 {
		r := <-got
		if r.err != nil {
			t.Errorf("after the place was freed: %v", r.err)
		}
		if r.lines != nil && strings.Join(r.lines, "|") != "a: restart" {
			t.Errorf("control request retried: %q", r.lines)
		}
	}
}

// TestRefusalIsOneLineOfJSON: what a refused client reads is an HTTP 503
// whose body is one line of JSON naming the refusal.
func TestRefusalIsOneLineOfJSON(t *testing.T) {
	a, b := net.Pipe()
	refuseBusy(a, "busy: why")
	go b.Write([]byte("GET /status HTTP/1.1\r\nHost: x\r\n\r\n"))
	resp, err := http.ReadResponse(bufio.NewReader(b), nil)
	if err != nil {
		t.Fatal(err)
	}
	var e ErrorReply
	raw, _ := io.ReadAll(resp.Body)
	body := string(raw)
	if resp.StatusCode != http.StatusServiceUnavailable || strings.Count(body, "\n") != 1 || json.Unmarshal([]byte(body), &e) != nil || e.Code != codeBusy || e.Error != "busy: why" {
		t.Errorf("%s %q", resp.Status, body)
	}
}
