package control

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/supervise"
	"github.com/llamaboot/llamaboot/internal/supervise/supervisetest"
)

// serve puts a control socket in front of h's supervisor.
func serve(t *testing.T, h *supervisetest.Harness) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	srv := &Server{Sup: h.Sup, Info: func() SupervisorInfo { return SupervisorInfo{PID: 42, Socket: sock} },
		Bundle: func() any { return map[string]string{"build_tag": "b1"} }}
	if err := srv.Listen(sock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return sock
}

// async runs f in the background and returns its result channel.
func async[T any](f func() (T, error)) chan result[T] {
	ch := make(chan result[T], 1)
	go func() {
		v, err := f()
		ch <- result[T]{v, err}
	}()
	return ch
}

type result[T any] struct {
	v   T
	err error
}

func TestSocketStatusAndMode(t *testing.T) {
	h := supervisetest.New(t)
	sock := serve(t, h)
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v %v, want 0600", fi.Mode(), err)
	}
	h.StartReady(h.Spec("a", 8001, "on-failure"))
	st, err := GetStatus(sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Supervisor.PID != 42 || len(st.Instances) != 1 {
		t.Fatalf("%+v", st)
	}
	in := st.Instances[0]
	if in.Name != "a" || in.State != "ready" || in.Want != "up" || in.PID != 1001 || in.Port != 8001 || in.LastExit != nil {
		t.Errorf("%+v", in)
	}
	if !Running(sock) || Running(filepath.Join(t.TempDir(), "none.sock")) {
		t.Error("Running")
	}
	if _, err := GetStatus(filepath.Join(t.TempDir(), "none.sock")); !errors.Is(err, ErrNoSupervisor) {
		t.Errorf("no supervisor: %v", err)
	}
}

func TestSocketRestartWaitsForReady(t *testing.T) {
	h := supervisetest.New(t)
	sock := serve(t, h)
	h.StartReady(h.Spec("a", 8001, "on-failure"))
	res := async(func() ([]string, error) { return Control(sock, supervise.OpRestart, "a", true) })
	h.Ready("a")
	r := <-res
	if r.err != nil || len(r.v) != 2 || r.v[0] != "a: restart requested" || !strings.HasPrefix(r.v[1], "a: ready after 0.00s (pid 1002)") {
		t.Fatalf("%q %v", r.v, r.err)
	}
	// stop answers once it is down; start once it is ready; start of a
	// running instance says so at once.
	lines, err := Control(sock, supervise.OpStop, "a", true)
	if err != nil || !slices.Equal(lines, []string{"a: stop requested", "a: stopped"}) {
		t.Errorf("%q %v", lines, err)
	}
	res = async(func() ([]string, error) { return Control(sock, supervise.OpStart, "a", true) })
	h.Ready("a")
	if r := <-res; r.err != nil || !strings.HasPrefix(r.v[1], "a: ready after") {
		t.Errorf("%q %v", r.v, r.err)
	}
	lines, err = Control(sock, supervise.OpStart, "a", true)
	if err != nil || lines[1] != "a: already ready" {
		t.Errorf("%q %v", lines, err)
	}
	// A restart that ends in a crash loop or a failure says so.
	h.Starter.SetErr(supervisetest.ErrBoom)
	lines, err = Control(sock, supervise.OpRestart, "a", true)
	if !errors.Is(err, ErrNotReached) || !strings.Contains(lines[1], "a: failed: start /x/llama-server: boom") {
		t.Errorf("%q %v", lines, err)
	}
	lines, err = Control(sock, supervise.OpStop, "a", false)
	if err != nil || len(lines) != 1 {
		t.Errorf("no wait: %q %v", lines, err)
	}
}

func TestSocketRefusesBadRequests(t *testing.T) {
	h := supervisetest.New(t)
	sock := serve(t, h)
	h.StartReady(h.Spec("a", 8001, "on-failure"))
	h.StartReady(h.Spec("b", 8002, "on-failure"))
	for _, c := range []struct {
		name   string
		op     supervise.Op
		status int
		want   string
	}{
		{"nope", supervise.OpRestart, http.StatusNotFound, `no instance "nope" is supervised (instances: a, b)`},
		// Path tricks reach nothing: the name is data, checked as such.
		{"a/../b", supervise.OpRestart, http.StatusBadRequest, `invalid instance name "a/../b"`},
		{"../b", supervise.OpStop, http.StatusBadRequest, "invalid instance name"},
	} {
		_, err := Control(sock, c.op, c.name, false)
		var re *RemoteError
		if !errors.As(err, &re) || re.Status != c.status || !strings.Contains(re.Msg, c.want) || !re.BadInput() {
			t.Errorf("%s %s: %v", c.op, c.name, err)
		}
	}
	if _, err := call(sock, "/control", ControlRequest{Op: "explode", Name: "b"}); err == nil || !strings.Contains(err.Error(), `unknown operation "explode"`) {
		t.Errorf("an unknown operation: %v", err)
	}
	if s := h.State("b"); s.State != supervise.Ready || s.PID != 1002 {
		t.Errorf("b was touched: %+v", s)
	}
	var rep Reply
	err := post(sock, "/adopt", "not an object", &rep)
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != "bad_request" {
		t.Errorf("malformed: %v", err)
	}
	err = post(sock, "/adopt", AdoptRequest{Instances: []Instance{{Name: "x/y"}}}, &rep)
	if !errors.As(err, &re) || re.Status != http.StatusBadRequest {
		t.Errorf("bad adopt name: %v", err)
	}
}

func TestSocketAdopt(t *testing.T) {
	h := supervisetest.New(t)
	sock := serve(t, h)
	a := h.Spec("a", 8001, "on-failure")
	plan := &config.Plan{Instances: []config.Instance{a}}
	res := async(func() ([]string, error) { return Adopt(sock, plan, true, false) })
	h.Ready("a")
	r := <-res
	if r.err != nil || len(r.v) != 2 || !strings.Contains(r.v[0], "a: handed to the supervisor") || !strings.HasPrefix(r.v[1], "a: ready after") {
		t.Fatalf("%q %v", r.v, r.err)
	}
	if spec, _ := h.Sup.Spec("a"); spec.ReadyTimeout != a.ReadyTimeout || spec.StopTimeout != a.StopTimeout {
		t.Errorf("timeouts lost on the wire: %+v", spec)
	}
	lines, err := Adopt(sock, plan, true, false)
	if err != nil || !slices.Equal(lines, []string{"a: already supervised with these settings", "a: already ready"}) {
		t.Errorf("%q %v", lines, err)
	}
	// Other settings for a supervised instance: refused (nothing changes)
	// unless replace is asked for.
	plan.Instances[0].Cmd = []string{"--changed"}
	_, err = Adopt(sock, plan, true, false)
	var re *RemoteError
	if !errors.As(err, &re) || !re.BadInput() || re.Code != "would_replace" || !strings.Contains(re.Msg, "a: port 1 removed, changed added") || !strings.Contains(re.Msg, "--replace") {
		t.Errorf("other settings without replace: %v", err)
	}
	if spec, _ := h.Sup.Spec("a"); !slices.Equal(spec.Cmd, a.Cmd) {
		t.Errorf("a refused hand-over changed the spec: %q", spec.Cmd)
	}
	res = async(func() ([]string, error) { return Adopt(sock, plan, true, true) })
	h.Ready("a")
	if r := <-res; r.err != nil || !strings.Contains(r.v[0], "a: replaced (") || !strings.HasPrefix(r.v[1], "a: ready after") {
		t.Errorf("%q %v", r.v, r.err)
	}
}

func TestSocketShuttingDown(t *testing.T) {
	h := supervisetest.New(t)
	sock := serve(t, h)
	h.StartReady(h.Spec("a", 8001, "on-failure"))
	h.Sup.StopAll(0)
	_, err := Control(sock, supervise.OpRestart, "a", false)
	var re *RemoteError
	if !errors.As(err, &re) || re.Status != http.StatusServiceUnavailable || re.BadInput() {
		t.Errorf("%v", err)
	}
	_, err = Adopt(sock, &config.Plan{Instances: []config.Instance{h.Spec("b", 1, "")}}, false, false)
	if !errors.As(err, &re) || re.Code != "shutting_down" {
		t.Errorf("%v", err)
	}
}

// TestPeerCheck covers the refusal logic; the real other-uid test runs the
// built binary (cmd/llamaboot).
func TestPeerCheck(t *testing.T) {
	s := &Server{UID: 500}
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(299) })
	for _, c := range []struct {
		p    peer
		code int
		want string
	}{
		{peer{cred: &unix.Ucred{Uid: 0, Gid: 0}}, 299, ""},
		{peer{cred: &unix.Ucred{Uid: 500, Gid: 7}}, 299, ""},
		{peer{cred: &unix.Ucred{Uid: 1000, Gid: 0}}, 403, "uid 1000 may not use this supervisor (only root and uid 500 may"},
		{peer{err: supervisetest.ErrBoom}, 403, "cannot tell who is asking (boom)"},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequestWithContext(context.WithValue(context.Background(), credKey{}, c.p), "GET", "/status", nil)
		s.checkPeer(ok).ServeHTTP(rec, req)
		if rec.Code != c.code || !strings.Contains(rec.Body.String(), c.want) {
			t.Errorf("%+v: %d %s", c.p, rec.Code, rec.Body)
		}
	}
}

func TestSocketPath(t *testing.T) {
	long := "/" + strings.Repeat("x", 120)
	if p := SocketPath(long); p != long+"/.llamaboot.sock" {
		t.Errorf("%q", p)
	}
	if p := SocketPath("/soft/app"); p != "/soft/app/.llamaboot.sock" {
		t.Errorf("%q", p)
	}
}

// Every operation from every resting state answers with what it led to,
// at once when it changes nothing, never waiting for an event that cannot
// come (a stop of a stopped instance waited ready_timeout+stop_timeout).
func TestSocketWaitFromEveryState(t *testing.T) {
	h := supervisetest.New(t)
	sock := serve(t, h)
	answer := func(res chan result[[]string]) ([]string, error) {
		t.Helper()
		select {
		case r := <-res:
			return r.v, r.err
		case <-time.After(10 * time.Second):
			t.Fatal("no answer")
		}
		return nil, nil
	}
	call := func(op supervise.Op) ([]string, error) {
		t.Helper()
		return answer(async(func() ([]string, error) { return Control(sock, op, "a", true) }))
	}
	check := func(what string, lines []string, err error, want string, wantErr error) {
		t.Helper()
		if len(lines) != 2 || !strings.HasPrefix(lines[1], want) || !errors.Is(err, wantErr) {
			t.Errorf("%s: %q %v, want %q %v", what, lines, err, want, wantErr)
		}
	}
	p := h.StartReady(h.Spec("a", 8001, "on-failure"))

	// supervise.Stopped after a clean exit, then stopped on request: stop is a no-op.
	p.Exit(0)
	h.Expect("a", supervise.EvStopped)
	lines, err := call(supervise.OpStop)
	check("stop after a clean exit", lines, err, "a: already stopped", nil)
	lines, err = call(supervise.OpStop)
	check("stop of stopped", lines, err, "a: already stopped", nil)

	// supervise.Starting: start waits for its readiness.
	res := async(func() ([]string, error) { return Control(sock, supervise.OpStart, "a", true) })
	started := h.Expect("a", supervise.EvStarted) // after its supervise.EvRequested
	res2 := async(func() ([]string, error) { return Control(sock, supervise.OpStart, "a", true) })
	h.Expect("a", supervise.EvRequested) // the second start, while starting
	h.Probe.Report(t, started.PID)
	lines, err = answer(res)
	check("start of stopped", lines, err, "a: ready after", nil)
	lines, err = answer(res2)
	check("start of starting", lines, err, "a: ready after", nil)
	lines, err = call(supervise.OpStart)
	check("start of ready", lines, err, "a: already ready", nil)

	// Restarting (after a crash): stop takes it down, start brings it up.
	h.Starter.Proc(started.PID).Exit(1)
	h.Expect("a", supervise.EvRestarting)
	lines, err = call(supervise.OpStop)
	check("stop of restarting", lines, err, "a: stopped", nil)

	// supervise.Failed: restart and start launch it, stop leaves it stopped.
	h.Starter.SetErr(supervisetest.ErrBoom)
	lines, err = call(supervise.OpStart)
	check("start that fails", lines, err, "a: failed: start /x/llama-server: boom", ErrNotReached)
	lines, err = call(supervise.OpStop)
	check("stop of failed", lines, err, "a: stopped", nil)
	_, _ = call(supervise.OpStart) // failed again
	h.Starter.SetErr(nil)
	res = async(func() ([]string, error) { return Control(sock, supervise.OpRestart, "a", true) })
	h.Ready("a")
	lines, err = answer(res)
	check("restart of failed", lines, err, "a: ready after", nil)
}

// The last word wins and every waiter hears about its own request: a
// restart waiting for readiness is told a later stop superseded it (exit
// 1 in the CLI), and the stop answers stopped.
func TestSocketWaiterToldItWasSuperseded(t *testing.T) {
	h := supervisetest.New(t)
	sock := serve(t, h)
	first := h.StartReady(h.Spec("a", 8001, "on-failure"))
	restart := async(func() ([]string, error) { return Control(sock, supervise.OpRestart, "a", true) })
	if st := h.Expect("a", supervise.EvStarted); st.PID == first.PID() {
		t.Fatalf("restart started %+v", st)
	}
	lines, err := Control(sock, supervise.OpStop, "a", true)
	if err != nil || !slices.Equal(lines, []string{"a: stop requested", "a: stopped"}) {
		t.Errorf("stop: %q %v", lines, err)
	}
	select {
	case r := <-restart:
		if !errors.Is(r.err, ErrNotReached) || len(r.v) != 2 || r.v[1] != "a: superseded by stop (asked after this request)" {
			t.Errorf("restart's waiter: %q %v", r.v, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the restart's waiter was never answered")
	}
	if s := h.State("a"); s.State != supervise.Stopped || s.WantUp {
		t.Errorf("after the stop: %+v", s)
	}
}
