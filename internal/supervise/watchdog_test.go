package supervise

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/proc"
)

// fakeLive answers the watchdog's probes and the drain's questions as the
// test sets them.
type fakeLive struct {
	mu        sync.Mutex
	err       error // what each probe reports
	tokens    int64
	hasTokens bool
	probes    int // probes run
	busy      int // busy slots
	slotsErr  error
	cpu       time.Duration // main threads' CPU time
	cpuOthers time.Duration // the other threads'
	wait      time.Duration // main threads' time waiting for a CPU
	refused   error
}

func (f *fakeLive) usage(pid int) (proc.Usage, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return proc.Usage{Main: f.cpu, All: f.cpu + f.cpuOthers, MainWait: f.wait}, true
}

func (f *fakeLive) probe(ctx context.Context, spec config.Instance) LiveProbe {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probes++
	return LiveProbe{Err: f.err, Tokens: f.tokens, HasTokens: f.hasTokens, Refused: f.refused}
}

func (f *fakeLive) slots(ctx context.Context, spec config.Instance) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.busy, f.slotsErr
}

func (f *fakeLive) set(change func(*fakeLive)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

func (f *fakeLive) ran() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.probes
}

// tick moves the clock to the watchdog's next probe and waits until it ran.
func (h *harness) tick(interval time.Duration) {
	h.t.Helper()
	n := h.live.ran()
	h.clock.expectTimer(h.t, interval)
	h.clock.Advance(interval)
	h.waitUntil("the probe to run", func() bool { return h.live.ran() > n })
}

func (h *harness) waitUntil(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// say writes a line as the process's output and waits until the log sink
// has read it.
func (h *harness) say(name string, p *fakeProc, line string) {
	h.t.Helper()
	s := h.sink(name)
	before := s.seen.Load()
	if _, err := p.out.WriteString(line + "\n"); err != nil {
		h.t.Fatal(err)
	}
	h.waitUntil("the sink to read the line", func() bool { return s.seen.Load() >= before+int64(len(line)+1) })
}

// echo writes a line that is not progress and waits until the sink has
// read it.
func (h *harness) echo(name string, p *fakeProc, line string) {
	h.t.Helper()
	s := h.sink(name)
	before := s.lines.Load()
	if _, err := p.out.WriteString(line + "\n"); err != nil {
		h.t.Fatal(err)
	}
	h.waitUntil("the sink to read the line", func() bool { return s.lines.Load() > before })
}

// sink is name's log sink (safe to read once its start event was seen).
func (h *harness) sink(name string) *sink {
	h.sup.mu.Lock()
	defer h.sup.mu.Unlock()
	return h.sup.owners[name].o.sink
}

// startWatched starts spec, ready, once the sink has read the start's
// output (which would count as progress otherwise).
func (h *harness) startWatched(spec config.Instance) *fakeProc {
	h.t.Helper()
	p := h.startReady(spec)
	h.waitUntil("its first output in the sink", func() bool { return h.sink(spec.Name).lines.Load() > 0 })
	return p
}

func watched(h *harness, failures int) config.Instance {
	spec := h.spec("a", 8001, "on-failure")
	spec.LivenessInterval, spec.LivenessTimeout, spec.LivenessFailures = 15*time.Second, 10*time.Second, failures
	return spec
}

var errNoAnswer = errors.New("GET /slots: no answer within 10s")

func TestWatchdogKillsHungSilentServer(t *testing.T) {
	h := newHarness(t)
	p := h.startWatched(watched(h, 4))
	h.tick(15 * time.Second)
	h.tick(15 * time.Second)
	// It wedges right after a probe answered: the worst case for how soon
	// the watchdog can tell.
	hangAt := h.clock.Now()
	h.live.set(func(f *fakeLive) { f.err = errNoAnswer })
	for range 3 {
		h.tick(15 * time.Second)
	}
	if got := p.got(); len(got) != 0 {
		t.Fatalf("signalled after 3 of 4 failures: %v", got)
	}
	h.waitUntil("3 failures in the status", func() bool { return h.state("a").ProbeFailures == 3 })
	if s := h.state("a"); s.State != Ready || s.ProbeErr != errNoAnswer.Error() {
		t.Errorf("while failing: %+v", s)
	}
	h.tick(15 * time.Second)
	hung := h.expect("a", EvHung)
	if bound := 4*15*time.Second + 10*time.Second; hung.Time.Sub(hangAt) > bound {
		t.Errorf("found hung %s after it wedged, more than interval×failures+timeout = %s", hung.Time.Sub(hangAt), bound)
	}
	if line, isErr := hung.Line(); !isErr || line != "a hung: 4 liveness probe(s) in a row failed over 45s with its threads idle, no log output and no token progress meanwhile (last: GET /slots: no answer within 10s); SIGKILL to its process group" {
		t.Errorf("line %q", line)
	}
	// SIGKILL at once, to the group (Signal is always the group's): a
	// wedged server may ignore SIGTERM.
	if got := p.got(); len(got) == 0 || got[0] != syscall.SIGKILL || slices.Contains(got, syscall.SIGTERM) {
		t.Errorf("signals %v, want SIGKILL and no SIGTERM", got)
	}
	ex := h.expect("a", EvExited)
	if ex.Reason != ReasonHung || ex.State != Restarting || ex.Exit != "killed by SIGKILL" || ex.Code != 137 {
		t.Errorf("exit %+v", ex)
	}
	// Restarted under its policy, counted, and watched afresh.
	h.live.set(func(f *fakeLive) { f.err = nil })
	h.clock.expectTimer(t, time.Second)
	h.clock.Advance(time.Second)
	second := h.ready("a")
	if s := h.state("a"); second.pid == p.pid || s.Restarts != 1 || s.LastExit != "killed by SIGKILL" || s.ProbeFailures != 0 {
		t.Errorf("after the restart: %+v", s)
	}
	h.tick(15 * time.Second)
}

func TestWatchdogHungUnderNeverFails(t *testing.T) {
	h := newHarness(t)
	spec := watched(h, 1)
	spec.Restart = "never"
	h.startWatched(spec)
	h.live.set(func(f *fakeLive) { f.err = errNoAnswer })
	h.tick(15 * time.Second)
	if line, _ := h.expect("a", EvHung).Line(); !strings.Contains(line, "1 liveness probe(s) in a row failed over 10s") {
		t.Errorf("line %q", line)
	}
	if f := h.expect("a", EvFailed); f.Reason != ReasonHung {
		t.Errorf("%+v", f)
	}
	// What health judges "not live: a: failed: hung (killed by SIGKILL)"
	// (package health's TestJudge) from.
	if s := h.state("a"); s.State != Failed || s.LastReason != ReasonHung || s.LastExit != "killed by SIGKILL" {
		t.Errorf("after the hang: %+v", s)
	}
}

func TestWatchdogLeavesBusyServerAlone(t *testing.T) {
	for _, how := range []string{"log", "tokens", "cpu", "workers", "starved"} {
		t.Run(how, func(t *testing.T) {
			h := newHarness(t)
			p := h.startWatched(watched(h, 3))
			h.tick(15 * time.Second) // answered: the mark to compare with
			h.live.set(func(f *fakeLive) { f.err = errNoAnswer; f.hasTokens = how == "tokens" })
			// Busy with a long prompt: no answer, but output (or tokens)
			// between every two probes.
			for i := range 5 {
				switch how {
				case "log":
					h.say("a", p, "I slot update_slots: prompt processing progress "+strconv.Itoa(i))
				case "tokens":
					h.live.set(func(f *fakeLive) { f.tokens += 512 })
				case "cpu":
					// One long decode: no output, no counters, but its
					// main thread burns most of a core.
					h.live.set(func(f *fakeLive) { f.cpu += 12 * time.Second })
				case "workers":
					// The decode runs on worker threads while the main
					// thread waits for them.
					h.live.set(func(f *fakeLive) { f.cpuOthers += 5 * time.Second })
				case "starved":
					// A machine loaded far past its cores: the loop
					// gets no CPU at all, but it is runnable, waiting
					// in the run queue for one.
					h.live.set(func(f *fakeLive) { f.wait += 4 * time.Second })
				}
				h.tick(15 * time.Second)
			}
			busy := h.expect("a", EvBusy)
			want := "its log grew by 150 bytes" // three lines of 50 bytes
			switch how {
			case "tokens":
				want = "its token counters moved by 1536"
			case "cpu":
				want = "its main thread used 36s of CPU (all its threads 36s) and waited 0s for one"
			case "workers":
				want = "its main thread used 0s of CPU (all its threads 15s) and waited 0s for one"
			case "starved":
				want = "its main thread used 0s of CPU (all its threads 0s) and waited 12s for one"
			}
			if line, isErr := busy.Line(); isErr || line != "a busy, left alone: 3 liveness probes in a row failed (last: GET /slots: no answer within 10s), but "+want+" since they began failing" {
				t.Errorf("line %q", line)
			}
			h.waitUntil("5 failures in the status", func() bool { return h.state("a").ProbeFailures == 5 })
			if got := p.got(); len(got) != 0 || h.state("a").State != Ready {
				t.Fatalf("a busy server was signalled: %v", got)
			}
			// Then it goes quiet: three probes with nothing between them
			// (the last busy probe begins the window) make it hung.
			h.tick(15 * time.Second)
			h.waitUntil("6 failures", func() bool { return h.state("a").ProbeFailures == 6 })
			if got := p.got(); len(got) != 0 {
				t.Fatalf("killed after 2 quiet probes: %v", got)
			}
			h.tick(15 * time.Second)
			if line, _ := h.expect("a", EvHung).Line(); !strings.Contains(line, "3 liveness probe(s) in a row failed over 30s") {
				t.Errorf("line %q", line)
			}
		})
	}
}

// What llama-server writes in answer to the watchdog's own probes, and a
// trickle of CPU time (answering a probe), are not progress: a stuck
// worker loop that logs "cancel task" for every abandoned probe is hung.
func TestWatchdogProbeEchoesAreNotProgress(t *testing.T) {
	h := newHarness(t)
	p := h.startWatched(watched(h, 3))
	h.tick(15 * time.Second)
	h.live.set(func(f *fakeLive) { f.err = errNoAnswer })
	for i := range 2 {
		h.echo("a", p, fmt.Sprintf("0.02.529.301 W srv          stop: cancel task, id_task = %d", i))
		h.echo("a", p, "0.03.579.084 W srv    operator(): unauthorized: Invalid API Key")
		h.live.set(func(f *fakeLive) {
			f.cpu += 10 * time.Millisecond
			f.cpuOthers += 100 * time.Millisecond
			f.wait += 10 * time.Millisecond // waking to answer, on a busy machine
		})
		h.tick(15 * time.Second)
	}
	if got := p.got(); len(got) != 0 {
		t.Fatalf("signalled after 2 failures: %v", got)
	}
	h.echo("a", p, "0.03.060.544 W srv          stop: cancel task, id_task = 9")
	h.tick(15 * time.Second)
	if line, _ := h.expect("a", EvHung).Line(); !strings.Contains(line, "3 liveness probe(s) in a row failed over 30s with its threads idle") {
		t.Errorf("line %q", line)
	}
}

func TestProgressReaderLeavesOutEchoes(t *testing.T) {
	var n atomic.Int64
	r := &progressReader{r: strings.NewReader(""), n: &n}
	long := strings.Repeat("x", 1000)
	loop := []string{ // the slot loop's own lines: progress
		"slot 0 | prompt processing progress\n",
		"0.03.1 I slot update_slots: id  0 | task 0 | prompt processing progress, n_tokens = 2048\n",
		"I slot " + long + " cancel task\n", // an echo past the head is the loop's
	}
	want := int64(0)
	for _, l := range loop {
		want += int64(len(l))
	}
	for _, chunk := range []string{
		"srv  update_slots: all slots", " are idle\n", // an echo split across reads
		loop[0],
		"W srv stop: cancel task, id_task = 3\n",
		"0.02.1 I srv  params_from_: Chat format: peg-native\n", // a client's request, loop stuck or not
		"0.02.2 W srv    operator(): got exception: bad json\n",
		loop[1], loop[2],
		"partial line with no end yet",
	} {
		r.scan([]byte(chunk))
	}
	if n.Load() != want {
		t.Errorf("counted %d bytes, want %d", n.Load(), want)
	}
}

// A server that wants a key llamaboot does not hold answers 401 on the
// loop's endpoints: said once, never counted as a failure.
func TestWatchdogRefusedIsNotHung(t *testing.T) {
	h := newHarness(t)
	p := h.startWatched(watched(h, 1))
	refused := errors.New("GET /slots answered 401 Unauthorized: it wants an API key that llamaboot does not hold")
	h.live.set(func(f *fakeLive) { f.refused = refused })
	for range 4 {
		h.tick(15 * time.Second)
	}
	e := h.expect("a", EvRefused)
	if line, isErr := e.Line(); !isErr || !strings.Contains(line, "a: the watchdog cannot see its worker loop: GET /slots answered 401") {
		t.Errorf("line %q", line)
	}
	if s := h.state("a"); s.State != Ready || s.ProbeFailures != 0 || len(p.got()) != 0 {
		t.Errorf("refused probes judged as failures: %+v, signals %v", s, p.got())
	}
	// Said once: no other refusal before /health itself stops answering.
	h.live.set(func(f *fakeLive) { f.err = errors.New("GET /health: connection refused") })
	h.tick(15 * time.Second)
	for e := h.next("a"); e.Kind != EvHung; e = h.next("a") {
		if e.Kind == EvRefused {
			t.Errorf("refusal said again: %+v", e)
		}
	}
}

func TestWatchdogRecovery(t *testing.T) {
	h := newHarness(t)
	h.startWatched(watched(h, 3))
	h.live.set(func(f *fakeLive) { f.err = errNoAnswer })
	h.tick(15 * time.Second)
	h.tick(15 * time.Second)
	h.waitUntil("2 failures", func() bool { return h.state("a").ProbeFailures == 2 })
	// Not ready while it does not answer (but not hung yet).
	// What health judges "not answering: 2 liveness probe(s) in a row
	// failed" from.
	if s := h.state("a"); s.State != Ready || s.ProbeFailures != 2 || s.ProbeErr == "" {
		t.Errorf("not answering: %+v", s)
	}
	h.live.set(func(f *fakeLive) { f.err = nil })
	h.tick(15 * time.Second)
	h.waitUntil("the count to reset", func() bool { return h.state("a").ProbeFailures == 0 })
	// The count starts over: two more failures are not three.
	h.live.set(func(f *fakeLive) { f.err = errNoAnswer })
	h.tick(15 * time.Second)
	h.tick(15 * time.Second)
	h.waitUntil("2 failures", func() bool { return h.state("a").ProbeFailures == 2 })
	if s := h.state("a"); s.State != Ready {
		t.Errorf("%+v", s)
	}
}

// With the watchdog off no probe timer is armed once the instance is
// ready; with it on, one is, before the owner answers anything else. (The
// owner arms the first one itself, so a check right after ready cannot
// race the watch goroutine.)
func TestWatchdogOff(t *testing.T) {
	for _, failures := range []int{0, 3} {
		h := newHarness(t)
		spec := watched(h, failures) // liveness_failures = 0: off
		h.startReady(spec)
		h.control("a", OpStart) // answered after ready was handled
		armed := 0
		for len(h.clock.armed) > 0 {
			if <-h.clock.armed == spec.LivenessInterval {
				armed++
			}
		}
		h.clock.Advance(time.Hour)
		if failures == 0 && (armed != 0 || h.live.ran() != 0) {
			t.Errorf("watchdog off: %d probe timers armed, %d probes", armed, h.live.ran())
		}
		if failures > 0 && armed != 1 {
			t.Errorf("watchdog on: %d probe timers armed", armed)
		}
	}
}

func TestNoReadyTimeout(t *testing.T) {
	h := newHarness(t)
	spec := h.spec("a", 8001, "on-failure")
	spec.ReadyTimeout = 0 // no deadline
	h.sup.Apply([]config.Instance{spec})
	ev := h.expect("a", EvStarted)
	h.clock.Advance(24 * time.Hour)
	h.probe.report(t, ev.PID, ProbeReady)
	if r := h.expect("a", EvReady); r.Took != 24*time.Hour {
		t.Errorf("ready %+v", r)
	}
}

func drained(h *harness, drain time.Duration) config.Instance {
	spec := h.spec("a", 8001, "on-failure")
	spec.DrainTimeout, spec.StopTimeout = drain, 8*time.Second
	return spec
}

func TestDrainWaitsForBusySlots(t *testing.T) {
	h := newHarness(t)
	p := h.startReady(drained(h, 5*time.Second))
	h.live.set(func(f *fakeLive) { f.busy = 1 })
	if _, err := h.sup.Control("a", OpStop); err != nil {
		t.Fatal(err)
	}
	// It waits at most half the 8s grace (4s), polling every 100 ms.
	h.clock.expectTimer(t, 4*time.Second)
	h.clock.expectTimer(t, 100*time.Millisecond) // after the first poll
	for range 3 {
		h.clock.Advance(100 * time.Millisecond)
		h.clock.expectTimer(t, 100*time.Millisecond) // polled again: still busy
	}
	h.waitUntil("draining", func() bool { return h.state("a").State == Draining })
	if got := p.got(); len(got) != 0 {
		t.Fatalf("signalled while a slot is busy: %v", got)
	}
	h.live.set(func(f *fakeLive) { f.busy = 0 })
	h.clock.Advance(100 * time.Millisecond)
	d := h.expect("a", EvDrained)
	if line, _ := d.Line(); d.Took != 400*time.Millisecond || line != "a: waited 0.40s for its busy slot(s) to finish" {
		t.Errorf("drained %+v %q", d, line)
	}
	if st := h.expect("a", EvStopped); st.Reason != ReasonStopRequested {
		t.Errorf("%+v", st)
	}
	if got := p.got(); !slices.Equal(got, []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL}) {
		t.Errorf("signals %v: SIGTERM after the drain (then SIGKILL for what is left of the group)", got)
	}
}

func TestDrainGivesUpAndKillDeadlineHolds(t *testing.T) {
	h := newHarness(t)
	h.starter.ignoreTerm = true
	p := h.startReady(drained(h, 5*time.Second))
	h.live.set(func(f *fakeLive) { f.busy = 2 })
	// A supervisor shutdown: grace 2s, so the drain gets 1s.
	go h.sup.StopAll(2 * time.Second)
	h.clock.expectTimer(t, time.Second)
	for range 10 {
		h.clock.expectTimer(t, 100*time.Millisecond) // polled: still busy
		h.clock.Advance(100 * time.Millisecond)
	}
	d := h.expect("a", EvDrained)
	if line, _ := d.Line(); d.Busy != 2 || line != "a: 2 slot(s) still busy after 1.0s of drain_timeout; stopping it anyway" {
		t.Errorf("%+v %q", d, line)
	}
	h.waitUntil("SIGTERM", func() bool { return len(p.got()) == 1 })
	// SIGKILL at the 2s grace from the stop, not 2s after the drain.
	h.clock.Advance(time.Second)
	if k := h.expect("a", EvKilled); k.Grace != 2*time.Second {
		t.Errorf("%+v", k)
	}
}

func TestDrainSkipped(t *testing.T) {
	for _, c := range []struct {
		name  string
		drain time.Duration
		err   error
	}{{"idle", 5 * time.Second, nil}, {"cannot tell", 5 * time.Second, ErrNoSlots}, {"off", 0, nil}} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			p := h.startReady(drained(h, c.drain))
			h.live.set(func(f *fakeLive) { f.slotsErr = c.err })
			if _, err := h.sup.Control("a", OpRestart); err != nil {
				t.Fatal(err)
			}
			// Nothing to wait for: SIGTERM without moving the clock, and
			// no drain line.
			if e := h.expect("a", EvExited); e.Reason != ReasonRestartRequested {
				t.Errorf("%+v", e)
			}
			h.ready("a")
			if p.got()[0] != syscall.SIGTERM {
				t.Errorf("signals %v", p.got())
			}
		})
	}
}

// llamaServer is a loopback server with llama-server's probe endpoints.
func llamaServer(t *testing.T, h http.Handler) config.Instance {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().(*net.TCPAddr)
	return config.Instance{Name: "a", Host: "127.0.0.1", Port: addr.Port, LivenessTimeout: 200 * time.Millisecond}
}

func TestHTTPProbes(t *testing.T) {
	wedged := make(chan struct{})
	defer close(wedged)
	mux := func(slots, metrics int) http.Handler {
		m := http.NewServeMux()
		m.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, `{"status":"ok"}`) })
		m.HandleFunc("/props", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, `{}`) })
		m.HandleFunc("/slots", func(w http.ResponseWriter, r *http.Request) {
			switch slots {
			case 0:
				select { // wedged
				case <-wedged:
				case <-r.Context().Done():
				}
			case 200:
				fmt.Fprint(w, `[{"id":0,"is_processing":true},{"id":1,"is_processing":false},{"id":2,"is_processing":true}]`)
			default:
				w.WriteHeader(slots)
			}
		})
		m.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(metrics)
			fmt.Fprint(w, "llamacpp:prompt_tokens_total 100\nllamacpp:tokens_predicted_total 23\nllamacpp:requests_processing 1\n")
		})
		return m
	}
	ctx := func(spec config.Instance) context.Context {
		c, cancel := context.WithTimeout(context.Background(), spec.LivenessTimeout)
		t.Cleanup(cancel)
		return c
	}
	// Answers; tokens read with --metrics.
	spec := llamaServer(t, mux(200, 200))
	spec.Cmd = []string{"--metrics"}
	if r := HTTPLiveness(ctx(spec), spec); r.Err != nil || !r.HasTokens || r.Tokens != 123 {
		t.Errorf("answering: %+v", r)
	}
	if n, err := HTTPBusySlots(context.Background(), spec); n != 2 || err != nil {
		t.Errorf("busy slots %d %v", n, err)
	}
	// /slots wedged while /health says ok.
	spec = llamaServer(t, mux(0, 200))
	if r := HTTPLiveness(ctx(spec), spec); r.Err == nil || r.Err.Error() != "GET /slots: no answer within 200ms" || r.HasTokens {
		t.Errorf("wedged: %+v", r)
	}
	// --no-slots: /props instead; busy slots from requests_processing.
	spec = llamaServer(t, mux(501, 200))
	if r := HTTPLiveness(ctx(spec), spec); r.Err != nil {
		t.Errorf("no slots: %+v", r)
	}
	if _, err := HTTPBusySlots(context.Background(), spec); !errors.Is(err, ErrNoSlots) {
		t.Errorf("no slots, no metrics: %v", err)
	}
	spec.Cmd = []string{"--metrics"}
	if n, err := HTTPBusySlots(context.Background(), spec); n != 1 || err != nil {
		t.Errorf("busy from metrics: %d %v", n, err)
	}
	// Nothing listening: not live, and nothing to drain.
	spec.Port = freePort(t)
	if r := HTTPLiveness(ctx(spec), spec); r.Err == nil || !strings.HasPrefix(r.Err.Error(), "GET /health: ") {
		t.Errorf("nothing there: %+v", r)
	}
	if n, err := HTTPBusySlots(context.Background(), spec); n != 0 || err != nil {
		t.Errorf("busy slots with nothing listening: %d %v", n, err)
	}
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestDrainOnReloadChangeAndRemoval(t *testing.T) {
	h := newHarness(t)
	spec := drained(h, 5*time.Second)
	p := h.startReady(spec)
	// apply changes what runs while a slot is busy: no signal until the
	// slot is idle.
	apply := func(p *fakeProc, desired []config.Instance) {
		t.Helper()
		h.live.set(func(f *fakeLive) { f.busy = 1 })
		if _, err := h.sup.Apply(desired); err != nil {
			t.Fatal(err)
		}
		h.clock.expectTimer(t, 4*time.Second)
		h.clock.expectTimer(t, 100*time.Millisecond)
		if got := p.got(); len(got) != 0 {
			t.Fatalf("signalled while busy: %v", got)
		}
		h.live.set(func(f *fakeLive) { f.busy = 0 })
		h.clock.Advance(100 * time.Millisecond)
		h.expect("a", EvDrained)
	}
	changed := spec
	changed.Cmd = []string{"--port", "1", "--ctx-size", "4096"}
	apply(p, []config.Instance{changed})
	apply(h.ready("a"), nil)
	h.expect("a", EvRemoved)
}
