package supervise

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
)

// fakeServer answers as llama-server does, on a loopback port: /health
// always; /slots and /metrics need the key when it has one (401
// otherwise); stuck makes /slots never answer.
type fakeServer struct {
	key   string
	busy  atomic.Int64
	stuck atomic.Bool
	slots atomic.Int64 // /slots requests seen
	srv   *httptest.Server
	port  int
}

func newFakeServer(t *testing.T, key string) *fakeServer {
	f := &fakeServer{key: key}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" && r.URL.Path != "/models" && f.key != "" && r.Header.Get("Authorization") != "Bearer "+f.key {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/health":
			fmt.Fprint(w, `{"status":"ok"}`)
		case "/slots":
			f.slots.Add(1)
			if f.stuck.Load() {
				<-r.Context().Done()
				return
			}
			fmt.Fprintf(w, `[{"id":0,"is_processing":%v},{"id":1,"is_processing":false}]`, f.busy.Load() > 0)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(f.srv.Close)
	_, p, _ := net.SplitHostPort(strings.TrimPrefix(f.srv.URL, "http://"))
	f.port, _ = strconv.Atoi(p)
	return f
}

func probeSpec(port int, cmd ...string) config.Instance {
	return config.Instance{Name: "a", Host: "127.0.0.1", Port: port, Cmd: append([]string{"--port", strconv.Itoa(port)}, cmd...),
		LivenessTimeout: 500 * time.Millisecond}
}

// A server with --api-key is probed with its key; without the key it
// llamaboot holds, the refusal is reported, never a failure; the drain
// cannot tell and says so.
func TestProbesCarryTheKey(t *testing.T) {
	f := newFakeServer(t, "k1")
	ctx := context.Background()
	if r := HTTPLiveness(ctx, probeSpec(f.port, "--api-key", "k1,k2")); r.Err != nil || r.Refused != nil {
		t.Errorf("with the key: %+v", r)
	}
	f.busy.Store(1)
	if n, err := HTTPBusySlots(ctx, probeSpec(f.port, "--api-key", "k1")); n != 1 || err != nil {
		t.Errorf("busy with the key: %d %v", n, err)
	}
	for _, c := range []struct {
		cmd  []string
		want string
	}{
		{nil, "it wants an API key that llamaboot does not hold"},
		{[]string{"--api-key", "wrong"}, "to the key of its api_key/api_key_file"},
		{[]string{"--api-key-file", "/nonexistent/keys"}, "llamaboot could not read its key"},
	} {
		r := HTTPLiveness(ctx, probeSpec(f.port, c.cmd...))
		if r.Err != nil || r.Refused == nil || !strings.Contains(r.Refused.Error(), c.want) {
			t.Errorf("%q: %+v", c.cmd, r)
		}
		if _, err := HTTPBusySlots(ctx, probeSpec(f.port, c.cmd...)); !errors.Is(err, ErrNoSlots) {
			t.Errorf("drain %q: %v, want it cannot tell", c.cmd, err)
		}
	}
}

// llama.cpp's router mode: /models says which models are loaded and on
// which port their child runs; the probes and the drain go to the
// children, never through /slots?model= (which would load one).
func TestRouterModeProbesTheChildren(t *testing.T) {
	child := newFakeServer(t, "")
	var modelQueries atomic.Int64
	loaded := atomic.Bool{}
	router := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("model") != "" {
			modelQueries.Add(1)
		}
		switch r.URL.Path {
		case "/health":
			fmt.Fprint(w, `{"status":"ok"}`)
		case "/models":
			status := `{"value":"unloaded","args":["llama-server","--port","0"]}`
			if loaded.Load() {
				status = fmt.Sprintf(`{"value":"loaded","args":["llama-server","--host","127.0.0.1","--port","%d"]}`, child.port)
			}
			fmt.Fprintf(w, `{"data":[{"id":"alpha","status":%s},{"id":"beta","status":{"value":"unloaded","args":[]}}]}`, status)
		default:
			w.WriteHeader(http.StatusBadRequest) // "model name is missing"
		}
	}))
	defer router.Close()
	_, p, _ := net.SplitHostPort(strings.TrimPrefix(router.URL, "http://"))
	port, _ := strconv.Atoi(p)
	spec := probeSpec(port, "--models-dir", "/models")
	ctx := context.Background()

	// Nothing loaded: /health alone, answered; nothing busy.
	if r := HTTPLiveness(ctx, spec); r.Err != nil {
		t.Errorf("idle router: %+v", r)
	}
	if n, err := HTTPBusySlots(ctx, spec); n != 0 || err != nil {
		t.Errorf("idle router busy: %d %v", n, err)
	}
	models, err := RouterStatus(ctx, spec)
	if err != nil || len(models) != 2 || models[0].Status != "unloaded" {
		t.Errorf("status: %+v %v", models, err)
	}

	// alpha loaded: its child is probed; busy and stuck come from it.
	loaded.Store(true)
	before := child.slots.Load()
	if r := HTTPLiveness(ctx, spec); r.Err != nil || child.slots.Load() == before {
		t.Errorf("the loaded child was not probed: %+v", r)
	}
	child.busy.Store(1)
	if n, err := HTTPBusySlots(ctx, spec); n != 1 || err != nil {
		t.Errorf("busy child: %d %v", n, err)
	}
	child.stuck.Store(true)
	pctx, cancel := context.WithTimeout(ctx, spec.LivenessTimeout) // as the watchdog probes
	r := HTTPLiveness(pctx, spec)
	cancel()
	if r.Err == nil || !strings.Contains(r.Err.Error(), "GET /slots: no answer within") {
		t.Errorf("a stuck child: %+v", r)
	}
	child.stuck.Store(false)
	models, _ = RouterStatus(ctx, spec)
	if models[0].ID != "alpha" || models[0].Status != "loaded" || models[0].Port != child.port {
		t.Errorf("status: %+v", models)
	}
	if n := modelQueries.Load(); n != 0 {
		t.Errorf("%d requests named a model (which loads it)", n)
	}
}

// A ready instance whose probes already fail with no sign of work is not
// drained on stop: /slots would only not answer, and the stop would wait
// out drain_timeout for nothing.
func TestStopSkipsTheDrainOfAStuckServer(t *testing.T) {
	h := newHarness(t)
	spec := watched(h, 3)
	spec.DrainTimeout = 5 * time.Second
	h.startWatched(spec)
	h.live.set(func(f *fakeLive) { f.err = errNoAnswer; f.busy = 1 })
	h.tick(15 * time.Second)
	h.waitUntil("a failed probe", func() bool { return h.state("a").ProbeFailures == 1 })
	if d := h.control("a", OpStop); d.Saw != Ready || d.Now != Stopping {
		t.Errorf("stop of a stuck server: %+v, want straight to stopping", d)
	}
	// One that is busy (probes fail, but it works) is drained as before,
	// from its first failed probe on.
	h2 := newHarness(t)
	h2.startWatched(spec)
	h2.live.set(func(f *fakeLive) { f.err = errNoAnswer; f.busy = 1; f.cpu += 5 * time.Second })
	h2.tick(15 * time.Second)
	h2.waitUntil("a failed probe", func() bool { return h2.state("a").ProbeFailures == 1 })
	if d := h2.control("a", OpStop); d.Now != Draining {
		t.Errorf("stop of a busy server: %+v, want draining", d)
	}
}
