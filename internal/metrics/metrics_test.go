package metrics

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/connlimit"
	"github.com/llamaboot/llamaboot/internal/health"
	"github.com/llamaboot/llamaboot/internal/launch"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

// fakeProc is a server process that ends when signalled or told to.
type fakeProc struct {
	pid    int
	exited chan syscall.WaitStatus
	once   sync.Once
}

func (p *fakeProc) PID() int                          { return p.pid }
func (p *fakeProc) Exited() <-chan syscall.WaitStatus { return p.exited }
func (p *fakeProc) Signal(sig syscall.Signal) error {
	p.end(syscall.WaitStatus(sig))
	return nil
}
func (p *fakeProc) end(ws syscall.WaitStatus) { p.once.Do(func() { p.exited <- ws }) }

type fakeStarter struct {
	mu    sync.Mutex
	next  int
	procs map[string]*fakeProc // the latest of each instance
}

func (s *fakeStarter) Start(spec config.Instance, out *os.File) (supervise.Process, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	p := &fakeProc{pid: 5000 + s.next, exited: make(chan syscall.WaitStatus, 1)}
	s.procs[spec.Name] = p
	return p, nil
}

func (s *fakeStarter) proc(name string) *fakeProc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.procs[name]
}

// llamaMetrics serves what llama-server's /metrics serves.
func llamaMetrics(t *testing.T, status int) (host string, port int) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(status)
		fmt.Fprint(w, "# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.\n# TYPE llamacpp:prompt_tokens_total counter\nllamacpp:prompt_tokens_total 1234\n"+
			"# HELP llamacpp:requests_processing Number of requests processing.\n# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 1\n")
	}))
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().(*net.TCPAddr)
	return addr.IP.String(), addr.Port
}

type world struct {
	sup     *supervise.Supervisor
	starter *fakeStarter
	events  <-chan supervise.Event
	pending []supervise.Event // read, not yet asked for
}

// await returns name's next event of kind, skipping name's earlier events
// and keeping other instances' for later.
func (w *world) await(t *testing.T, name string, kind supervise.EventKind) supervise.Event {
	t.Helper()
	for i, e := range w.pending {
		if e.Instance == name {
			w.pending = append(w.pending[:i:i], w.pending[i+1:]...)
			if e.Kind == kind {
				return e
			}
			return w.await(t, name, kind)
		}
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e := <-w.events:
			if e.Instance != name {
				w.pending = append(w.pending, e)
			} else if e.Kind == kind {
				return e
			}
		case <-deadline:
			t.Fatalf("no %s event for %s", kind, name)
		}
	}
}

func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d\n%s", rec.Code, rec.Body)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// value is the sample of family name whose labels include want.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	v, ok := find(fams, name, want...)
	if !ok {
		t.Fatalf("no %s%v in /metrics", name, want)
	}
	return v
}

func find(fams map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i < len(want); i += 2 {
			if have[want[i]] != want[i+1] {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		}
		return m.GetUntyped().GetValue(), true
	}
	return 0, false
}

func TestMetricsAndProbes(t *testing.T) {
	st := &fakeStarter{procs: map[string]*fakeProc{}}
	var hangs atomic.Bool
	hangs.Store(true)
	sup := supervise.New(supervise.NewReaper(), supervise.Policy{BackoffMin: time.Millisecond, BackoffMax: time.Millisecond}, nil, supervise.Deps{
		Starter:   st,
		CheckPort: func(config.Instance) error { return nil },
		// Every instance but "slow" loads at once; "slow" never does.
		Probe: func(ctx context.Context, spec config.Instance, pid int, report func(supervise.Probe)) {
			if spec.Name != "slow" {
				report(supervise.ProbeReady)
			}
		},
		// Only the first process of "wedged" stops answering.
		Liveness: func(ctx context.Context, spec config.Instance) supervise.LiveProbe {
			if spec.Name == "wedged" && hangs.CompareAndSwap(true, false) {
				return supervise.LiveProbe{Err: errors.New("GET /slots: no answer within 1s")}
			}
			return supervise.LiveProbe{}
		},
	})
	events, cancel := sup.Subscribe()
	defer cancel()
	w := &world{sup: sup, starter: st, events: events}
	t.Cleanup(func() { sup.StopAll(time.Second) })

	dir := t.TempDir()
	spec := func(name, host string, port int, proxy bool) config.Instance {
		return config.Instance{Name: name, Host: host, Port: port, URL: "http://" + net.JoinHostPort(host, strconv.Itoa(port)), MetricsProxy: proxy,
			LogFile: filepath.Join(dir, name+".log"), Restart: "on-failure", ReadyTimeout: time.Minute, StopTimeout: time.Second}
	}
	aHost, aPort := llamaMetrics(t, 200)
	bHost, bPort := llamaMetrics(t, 501)
	// The fake processes hold no sockets: stand in for /proc, where a's and
	// b's processes hold their ports.
	held := func(_, port int) bool { return port == aPort || port == bPort }
	listensOn = held
	t.Cleanup(func() { listensOn = launch.ListensOn })
	slow := spec("slow", "127.0.0.1", 1, false)
	slow.ReadyTimeout = 200 * time.Millisecond
	wedged := spec("wedged", "127.0.0.1", 2, false)
	wedged.LivenessInterval, wedged.LivenessTimeout, wedged.LivenessFailures = time.Millisecond, time.Second, 1

	h, stop := Handler(Options{Sup: sup, Started: time.Now().Add(-time.Minute),
		Bundle:      func() (Bundle, bool) { return Bundle{BuildTag: "b7123", SHA256: "abc", Archive: "llama.tar.gz"}, true },
		InstallTook: func() (time.Duration, bool) { return 1500 * time.Millisecond, true },
	})
	defer stop()

	if _, err := sup.Apply([]config.Instance{spec("a", aHost, aPort, true), spec("b", bHost, bPort, true), slow, wedged}); err != nil {
		t.Fatal(err)
	}
	w.await(t, "a", supervise.EvReady)
	w.await(t, "b", supervise.EvReady)
	// a crashes once, then is restarted on request.
	st.proc("a").end(syscall.WaitStatus(3 << 8))
	w.await(t, "a", supervise.EvReady)
	if _, err := sup.Control("a", supervise.OpRestart); err != nil {
		t.Fatal(err)
	}
	w.await(t, "a", supervise.EvReady)
	// slow misses its ready_timeout once and is stopped while it waits to
	// start again.
	w.await(t, "slow", supervise.EvRestarting)
	if _, err := sup.Control("slow", supervise.OpStop); err != nil {
		t.Fatal(err)
	}
	w.await(t, "slow", supervise.EvStopped)
	// wedged is found hung once and restarted.
	w.await(t, "wedged", supervise.EvHung)
	w.await(t, "wedged", supervise.EvReady)

	// The collector follows the events on its own subscription: scrape
	// until it has seen the last of them.
	var fams map[string]*dto.MetricFamily
	deadline := time.Now().Add(10 * time.Second)
	for {
		fams = scrape(t, h)
		v1, _ := find(fams, "llamaboot_instance_last_exit_code", "instance", "slow")
		v2, _ := find(fams, "llamaboot_instance_restarts_total", "instance", "wedged", "reason", "hung")
		if (v1 == 143 && v2 == 1) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"llamaboot_instance_restarts_total", []string{"instance", "a", "reason", "crash"}, 1},
		{"llamaboot_instance_restarts_total", []string{"instance", "a", "reason", "manual"}, 1},
		{"llamaboot_instance_restarts_total", []string{"instance", "a", "reason", "hung"}, 0},
		{"llamaboot_instance_restarts_total", []string{"instance", "wedged", "reason", "hung"}, 1},
		{"llamaboot_instance_last_exit_code", []string{"instance", "wedged"}, 137}, // SIGKILL
		{"llamaboot_instance_restarts_total", []string{"instance", "slow", "reason", "load_timeout"}, 1},
		{"llamaboot_instance_restarts_total", []string{"instance", "b", "reason", "crash"}, 0},
		{"llamaboot_instance_state", []string{"instance", "a", "state", "ready"}, 1},
		{"llamaboot_instance_state", []string{"instance", "a", "state", "starting"}, 0},
		{"llamaboot_instance_state", []string{"instance", "slow", "state", "stopped"}, 1},
		{"llamaboot_instance_ready", []string{"instance", "a"}, 1},
		{"llamaboot_instance_ready", []string{"instance", "slow"}, 0},
		{"llamaboot_instance_last_exit_code", []string{"instance", "a"}, 143}, // SIGTERM of the restart
		{"llamaboot_instance_uptime_seconds", []string{"instance", "slow"}, 0},
		{"llamaboot_instance_liveness_failures", []string{"instance", "a"}, 0},
		{"llamaboot_install_duration_seconds", nil, 1.5},
		{"llamaboot_bundle_info", []string{"build_tag", "b7123", "sha256", "abc", "archive", "llama.tar.gz"}, 1},
		// metrics_proxy: a's own metrics with its instance label; b's
		// server answers 501, which its up gauge says.
		{"llamacpp:prompt_tokens_total", []string{"instance", "a"}, 1234},
		{"llamacpp:requests_processing", []string{"instance", "a"}, 1},
		{"llamaboot_metrics_proxy_up", []string{"instance", "a"}, 1},
		{"llamaboot_metrics_proxy_up", []string{"instance", "b"}, 0},
	} {
		if got := value(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if v := value(t, fams, "llamaboot_instance_time_to_ready_seconds", "instance", "a"); v < 0 || v > 10 {
		t.Errorf("time to ready %v", v)
	}
	if v := value(t, fams, "llamaboot_supervisor_uptime_seconds"); v < 60 {
		t.Errorf("supervisor uptime %v, want ≥ 60 (started a minute ago)", v)
	}
	if v := value(t, fams, "llamaboot_instance_uptime_seconds", "instance", "a"); v <= 0 {
		t.Errorf("uptime of a running instance: %v", v)
	}
	if f := fams["llamacpp:prompt_tokens_total"]; len(f.Metric) != 1 || f.GetType() != dto.MetricType_COUNTER {
		t.Errorf("proxied family: %v", f)
	}
	if _, ok := fams["process_resident_memory_bytes"]; !ok {
		t.Error("no process metrics")
	}

	// /readyz and /livez: JSON per instance, 503 when not healthy.
	for _, c := range []struct {
		path string
		code int
		want string
	}{
		{"/readyz", 503, "not ready: slow: stopped on request"},
		{"/readyz?instance=a", 200, "ready: a"},
		{"/livez", 200, "live: the supervisor answers; none of 4 instance(s) is failed or hung"},
		{"/readyz?instance=zz", 404, `"zz" (supervised: a, b, slow, wedged)`},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", c.path, nil))
		var got health.Health
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != c.code || !strings.Contains(got.Summary, c.want) {
			t.Errorf("%s: %d %s (%v); want %d with %q", c.path, rec.Code, rec.Body, err, c.code, c.want)
		}
		if c.path == "/readyz" && (len(got.Instances) != 4 || !got.Instances[0].Ready || got.Instances[2].Ready) {
			t.Errorf("/readyz instances: %+v", got.Instances)
		}
	}

	// Removed instances leave /metrics.
	if _, err := sup.Apply([]config.Instance{spec("b", bHost, bPort, true)}); err != nil {
		t.Fatal(err)
	}
	w.await(t, "a", supervise.EvRemoved)
	w.await(t, "slow", supervise.EvRemoved)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var left []string
		for _, m := range scrape(t, h)["llamaboot_instance_restarts_total"].Metric {
			for _, l := range m.Label {
				if l.GetName() == "instance" && l.GetValue() != "b" {
					left = append(left, l.GetValue())
				}
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("removed instances %v still in /metrics", left)
		}
	}
}

func TestListen(t *testing.T) {
	sup := supervise.New(supervise.NewReaper(), supervise.Policy{}, nil, supervise.Deps{})
	if _, err := Listen("256.0.0.1:0", Options{Sup: sup}); err == nil || !strings.Contains(err.Error(), "listen on 256.0.0.1:0 for /livez, /readyz and /metrics") {
		t.Errorf("bad address: %v", err)
	}
	s, err := Listen("127.0.0.1:0", Options{Sup: sup, Started: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, err := http.Get("http://" + s.Addr() + "/livez")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/livez with nothing supervised: %s", resp.Status)
	}
}

// TestListenBoundsConnections: idle clients cannot pile up connections
// (20,000 idle keep-alive ones once exhausted PID 1's descriptors): one
// peer gets PerPeer of them, the rest are closed at once; another peer is
// still served; a kept-alive connection left idle is closed after
// IdleTimeout, and one that never sends its request after the header
// timeout.
func TestListenBoundsConnections(t *testing.T) {
	sup := supervise.New(supervise.NewReaper(), supervise.Policy{}, nil, supervise.Deps{})
	s, err := Listen("127.0.0.1:0", Options{Sup: sup, Started: time.Now(),
		Limits: connlimit.Limits{Max: 8, PerPeer: 4}, IdleTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dial := func(src string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", s.Addr())
		if err != nil {
			return nil // reset at once: refused
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	open := func(c net.Conn, wait time.Duration) bool {
		if c == nil {
			return false
		}
		c.SetReadDeadline(time.Now().Add(wait))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return errors.As(err, &ne) && ne.Timeout()
	}
	for i := range 4 {
		if c := dial("127.0.0.1"); !open(c, 200*time.Millisecond) {
			t.Fatalf("idle connection %d closed before its peer's cap", i)
		}
	}
	for i := range 20 {
		if c := dial("127.0.0.1"); open(c, 200*time.Millisecond) {
			t.Fatalf("connection %d over the per-peer cap was kept", i)
		}
	}
	// Another peer is served meanwhile.
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://" + s.Addr() + "/livez")
	if err != nil {
		t.Fatalf("another peer was not served: %v", err)
	}
	resp.Body.Close()

	// A kept-alive connection left idle is closed.
	c := dial("127.0.0.3")
	fmt.Fprintf(c, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("an idle kept-alive connection was not closed after IdleTimeout: %v", err)
	}
}
