package supervise

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/proc"
	"github.com/llamaboot/llamaboot/internal/promtext"
)

// The hang watchdog and the drain on stop.
//
// llama-server can keep answering /health while its worker loop is wedged
// and every request hangs; but its endpoints also stall while it is merely
// busy with a long prompt. So a goroutine per ready process probes it
// every liveness_interval (GET /health, and GET /slots — or /props where
// /slots is off — which need the worker loop) and hands each result to the
// owner, which alone judges and kills: hung only when liveness_failures
// probes in a row failed AND the server showed no progress in that window.
// Progress is what probing cannot fake: CPU time of its main thread (the
// slot loop) or of all its threads (a decode may run on worker threads
// while the main thread waits for them; a stuck loop burns nothing in any
// of them beyond the little answering /health takes), its /metrics
// token counters, and output lines other than llama-server's answers to
// our own requests (it logs "cancel task" for each probe we abandon, even
// while stuck). Then SIGKILL to its process group (a wedged server may
// ignore SIGTERM) and a restart under its policy, reason hung.
//
// A server with an API key is probed with it (api_key, api_key_file); one
// whose key llamaboot does not hold answers 401 to everything but /health,
// which is said once and leaves the watchdog with /health alone. A server
// in llama.cpp's router mode has no slots of its own: its loaded models'
// child servers are probed instead, on their own ports.

// LiveProbe is one liveness probe's result.
type LiveProbe struct {
	Err       error // nil: it answered; else which request failed and how
	Tokens    int64 // prompt + predicted tokens, from /metrics
	HasTokens bool  // Tokens was read this time
	// Refused is a 401 or 403 from an endpoint that needs the worker
	// loop: the server wants a key llamaboot does not hold (or not the one
	// it holds). Not a failure: the probe stands on /health alone.
	Refused error

	// Taken by the watchdog as the probe began, so the owner judges the
	// probe by then, not by when it got to the result.
	at       time.Time
	logBytes int64
	use      proc.Usage
	hasUse   bool
}

// Liveness probes a ready process once, within ctx's deadline.
type Liveness func(ctx context.Context, spec config.Instance) LiveProbe

// BusySlots says how many of a server's slots are processing a request.
// ErrNoSlots means the server cannot tell (/slots off and no --metrics).
type BusySlots func(ctx context.Context, spec config.Instance) (int, error)

// ErrNoSlots is a server that cannot say whether its slots are busy.
var ErrNoSlots = errors.New("it cannot tell whether its slots are busy (/slots is off and metrics = false)")

// progress is what a busy server changes and a hung one does not.
type progress struct {
	logBytes int64
	tokens   int64
	use      proc.Usage // what its threads did (see proc.ServerUsage)
}

// busyCPU is the CPU time a main thread must use over elapsed to count as
// working: 1% of a core, and at least two clock ticks so one stray tick is
// not work. A long decode uses most of a core (still over 10% on a
// 2-core machine loaded 10 deep); a stuck loop uses none at all, and
// while probes fail none of them reaches the loop.
func busyCPU(elapsed time.Duration) time.Duration {
	return max(elapsed/100, 20*time.Millisecond)
}

// busyAllCPU is the same for all threads together: 10% of a core, well
// above what answering probes and other clients' refused requests takes.
func busyAllCPU(elapsed time.Duration) time.Duration {
	return max(elapsed/10, 50*time.Millisecond)
}

// busyWait is the time a main thread must wait, runnable, for a CPU over
// elapsed to count as working: 1% of a core, as busyCPU. A stuck loop is
// never runnable, so it waits for nothing; a live one on a machine loaded
// far past its cores waits where it cannot run (seconds a second,
// measured with the real server under 16 spinning processes on 2 cores).
func busyWait(elapsed time.Duration) time.Duration {
	return max(elapsed/100, 20*time.Millisecond)
}

// worked says whether what the threads did between two marks is work.
func worked(from, to progress, elapsed time.Duration) bool {
	return to.use.Main-from.use.Main >= busyCPU(elapsed) ||
		to.use.All-from.use.All >= busyAllCPU(elapsed) ||
		to.use.MainWait-from.use.MainWait >= busyWait(elapsed)
}

// liveState is the owner's count of a ready process's liveness probes.
type liveState struct {
	fails      int       // failed in a row
	silent     int       // of those, the last ones with no progress between them
	since      time.Time // when the silent window began
	err        error     // what the last failed probe said
	mark       progress  // at the previous probe
	streakMark progress  // at the last probe that answered
	tokens     int64     // last token count read
	markAt     time.Time // when mark was taken
	told       bool      // EvBusy said for this streak
	quiet      bool      // no sign of work between the last two probes
	refused    bool      // EvRefused said for this process
}

// startWatch starts probing the process, if the watchdog is on for it.
func (o *owner) startWatch() {
	o.live = liveState{mark: progress{logBytes: o.sink.seen.Load()}, markAt: o.d.Clock.Now()}
	o.live.streakMark = o.live.mark
	if !o.spec.Watched() {
		return
	}
	ctx, cancel := context.WithCancel(o.probeCtx)
	o.stopWatch = cancel
	// The first probe's timer is armed here, by the owner: a ready
	// instance is watched from the moment it is ready.
	next := o.d.Clock.Now().Add(o.spec.LivenessInterval)
	first := o.d.Clock.After(o.spec.LivenessInterval)
	go watch(ctx, o.spec, o.d, &o.sink.seen, o.proc.PID(), next, first, o.send)
}

// watch probes on a fixed schedule (every interval from the start, so a
// hang is found within interval×failures+timeout) until ctx ends. It
// never signals the process: only the owner does.
func watch(ctx context.Context, spec config.Instance, d Deps, logBytes *atomic.Int64, pid int, next time.Time, first <-chan time.Time, send func(msg) error) {
	clock := d.Clock
	for tick := first; ; tick = clock.After(next.Sub(clock.Now())) {
		select {
		case <-tick:
		case <-ctx.Done():
			return
		}
		at, seen := clock.Now(), logBytes.Load()
		use, hasUse := d.Usage(pid)
		pctx, cancel := context.WithTimeout(ctx, spec.LivenessTimeout)
		r := d.Liveness(pctx, spec)
		cancel()
		r.at, r.logBytes, r.use, r.hasUse = at, seen, use, hasUse
		if ctx.Err() != nil || send(msg{in: inLiveness, pid: pid, live: &r}) != nil {
			return
		}
		// A probe that took longer than the interval delays the next one
		// rather than overlapping it.
		next = next.Add(spec.LivenessInterval)
		if now := clock.Now(); next.Before(now) {
			next = now
		}
	}
}

// liveness counts one probe result of a ready process.
func (o *owner) liveness(m msg) State {
	r, w := m.live, &o.live
	if r.HasTokens {
		w.tokens = r.Tokens
	}
	now := r.at
	mark := progress{logBytes: r.logBytes, tokens: w.tokens, use: w.mark.use}
	if r.hasUse {
		mark.use = r.use
	}
	moved := mark.logBytes != w.mark.logBytes || mark.tokens != w.mark.tokens || worked(w.mark, mark, now.Sub(w.markAt))
	w.mark, w.markAt, w.quiet = mark, now, !moved
	if r.Refused != nil && !w.refused {
		w.refused = true
		o.emit(Event{Kind: EvRefused, State: Ready, PID: o.proc.PID(), Err: r.Refused})
	}
	if r.Err == nil {
		*w = liveState{mark: mark, streakMark: mark, markAt: now, tokens: w.tokens, refused: w.refused}
		return Ready
	}
	w.fails++
	w.err = r.Err
	if w.fails == 1 || moved {
		// Output or tokens since the previous probe: the silent window
		// starts again here.
		w.silent, w.since = 1, now
	} else {
		w.silent++
	}
	n := o.spec.LivenessFailures
	if w.silent >= n {
		window := now.Sub(w.since)
		if n == 1 {
			window = o.spec.LivenessTimeout
		}
		return o.killHung(fmt.Errorf("%d liveness probe(s) in a row failed over %s with its threads idle, no log output and no token progress meanwhile (last: %v)",
			w.silent, window.Round(time.Millisecond), r.Err))
	}
	if w.fails >= n && !w.told {
		w.told = true
		var grew []string
		if d := mark.logBytes - w.streakMark.logBytes; d > 0 {
			grew = append(grew, fmt.Sprintf("its log grew by %d bytes", d))
		}
		if d := mark.tokens - w.streakMark.tokens; d != 0 {
			grew = append(grew, fmt.Sprintf("its token counters moved by %d", d))
		}
		if worked(w.streakMark, mark, now.Sub(w.since)) {
			from, to := w.streakMark.use, mark.use
			grew = append(grew, fmt.Sprintf("its main thread used %s of CPU (all its threads %s) and waited %s for one",
				(to.Main-from.Main).Round(10*time.Millisecond), (to.All-from.All).Round(10*time.Millisecond),
				(to.MainWait-from.MainWait).Round(10*time.Millisecond)))
		}
		o.emit(Event{Kind: EvBusy, State: Ready, PID: o.proc.PID(),
			Err: fmt.Errorf("%d liveness probes in a row failed (last: %v), but %s since they began failing", w.fails, r.Err, strings.Join(grew, " and "))})
	}
	return Ready
}

// killHung ends a hung process: SIGKILL to its whole group at once.
func (o *owner) killHung(why error) State {
	o.reason = ReasonHung
	o.stopProbe()
	_ = o.proc.Signal(syscall.SIGKILL)
	o.emit(Event{Kind: EvHung, State: Stopping, PID: o.proc.PID(), Err: why})
	return Stopping
}

// stopOrDrain stops the process for r: a ready one with drain_timeout set
// first gets time for its busy slots to finish (at most half the grace,
// so SIGTERM keeps the other half), then SIGTERM.
func (o *owner) stopOrDrain(r Reason, grace time.Duration) State {
	if o.state != Ready || o.spec.DrainTimeout <= 0 {
		return o.terminate(r, grace)
	}
	if o.live.fails > 0 && o.live.quiet {
		// Its probes already fail with no sign of work: nothing it could
		// finish is in flight, and /slots would only not answer.
		o.sink.notef("%s: not drained: its liveness probes fail with no sign of work (%v)", o.spec.Name, o.live.err)
		return o.terminate(r, grace)
	}
	o.reason = r
	o.stopWatch()
	o.armKill(grace)
	limit := min(o.spec.DrainTimeout, o.killGrace/2)
	go drain(o.probeCtx, o.spec, o.d.Clock, o.d.Slots, limit, o.proc.PID(), o.send)
	return Draining
}

// drain polls the busy slots until none is busy, the server cannot tell,
// or limit passes, and reports to the owner (ctx ends with the process).
func drain(ctx context.Context, spec config.Instance, clock Clock, slots BusySlots, limit time.Duration, pid int, send func(msg) error) {
	began := clock.Now()
	deadline := clock.After(limit)
	res := drainResult{}
	for {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		busy, err := slots(qctx, spec)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil && busy > 0 {
			res.waited = true
		}
		if (err == nil && busy == 0) || errors.Is(err, ErrNoSlots) {
			res.err = err
			break
		}
		res.busy = max(busy, 1) // a server that does not answer may be busy
		res.silent = err != nil
		select {
		case <-deadline:
			res.took = clock.Now().Sub(began)
			_ = send(msg{in: inDrained, pid: pid, drain: &res})
			return
		case <-clock.After(100 * time.Millisecond):
		case <-ctx.Done():
			return
		}
	}
	res.busy, res.took = 0, clock.Now().Sub(began)
	_ = send(msg{in: inDrained, pid: pid, drain: &res})
}

// drainResult is how a drain ended.
type drainResult struct {
	busy   int           // still busy at the end
	took   time.Duration // time waited
	waited bool          // a slot was seen busy
	err    error         // ErrNoSlots: it could not tell
	silent bool          // the last question got no answer
}

// drained sends SIGTERM once the drain is over.
func (o *owner) drained(m msg) State {
	d := m.drain
	switch {
	case d.busy > 0 || d.waited:
		o.emit(Event{Kind: EvDrained, State: Stopping, PID: o.proc.PID(), Took: d.took, Busy: d.busy, Silent: d.silent && d.busy > 0})
	case d.err != nil:
		o.sink.notef("%s: not drained before stopping: %v", o.spec.Name, d.err)
	}
	return o.terminate(o.reason, 0)
}

// HTTPLiveness probes /health and the worker loops (/slots, or /props
// where /slots is off: of the server itself, or in router mode of each
// loaded model's child server), and reads the token counters from
// /metrics where --metrics is on, all at once within ctx's deadline.
func HTTPLiveness(ctx context.Context, spec config.Instance) LiveProbe {
	var res LiveProbe
	c := newProbeClient(spec)
	tokens := make(chan LiveProbe, 1)
	if hasFlag(spec, "--metrics") && !spec.RouterMode() {
		go func() {
			var r LiveProbe
			r.Tokens, r.HasTokens = c.readTokens(ctx, c.base)
			tokens <- r
		}()
	} else {
		tokens <- LiveProbe{}
	}
	type loopResult struct{ err, refused error }
	loop := make(chan loopResult, 1)
	go func() {
		bases, err := c.loops(ctx)
		if err != nil {
			loop <- loopResult{err: err}
			return
		}
		var r loopResult
		for _, base := range bases {
			err, refused := c.probeLoop(ctx, base)
			if r.err == nil {
				r.err = err
			}
			if r.refused == nil {
				r.refused = refused
			}
		}
		loop <- r
	}()
	code, err := c.get(ctx, c.base+"/health", nil)
	res.Err = expect200("/health", code, err, spec.LivenessTimeout)
	l := <-loop
	if res.Err == nil {
		res.Err = l.err
	}
	res.Refused = l.refused
	t := <-tokens
	res.Tokens, res.HasTokens = t.Tokens, t.HasTokens
	return res
}

// probeLoop asks one server's worker loop to answer: /slots, or /props
// where /slots is off. refused: it wants a key.
func (c probeClient) probeLoop(ctx context.Context, base string) (err, refused error) {
	path := "/slots"
	code, err := c.get(ctx, base+path, nil)
	if err == nil && code == http.StatusNotImplemented {
		path = "/props"
		code, err = c.get(ctx, base+path, nil)
	}
	if err == nil && (code == http.StatusUnauthorized || code == http.StatusForbidden) {
		return nil, c.refusal(path, code)
	}
	return expect200(path, code, err, c.spec.LivenessTimeout), nil
}

// refusal says why a server refused us, and what to do.
func (c probeClient) refusal(path string, code int) error {
	what := fmt.Sprintf("GET %s answered %d %s", path, code, http.StatusText(code))
	switch {
	case c.keyErr != nil && !errors.Is(c.keyErr, config.ErrNoAPIKey):
		return fmt.Errorf("%s; llamaboot could not read its key: %v", what, c.keyErr)
	case c.key == "":
		return fmt.Errorf("%s: it wants an API key that llamaboot does not hold (give it with api_key_file or api_key in its config, not only in its environment)", what)
	}
	return fmt.Errorf("%s to the key of its api_key/api_key_file (it serves with another key)", what)
}

// HTTPBusySlots counts the slots /slots shows processing (in router mode,
// of every loaded model's child server); where /slots is off, it reads
// llamacpp:requests_processing from /metrics.
func HTTPBusySlots(ctx context.Context, spec config.Instance) (int, error) {
	c := newProbeClient(spec)
	bases, err := c.loops(ctx)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return 0, nil // nothing listens: no request can be in flight
		}
		return 0, err
	}
	total := 0
	for _, base := range bases {
		n, err := c.busySlots(ctx, base)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

func (c probeClient) busySlots(ctx context.Context, base string) (int, error) {
	var slots []struct {
		IsProcessing bool `json:"is_processing"`
	}
	code, err := c.get(ctx, base+"/slots", func(r io.Reader) error { return json.NewDecoder(io.LimitReader(r, 4<<20)).Decode(&slots) })
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return 0, nil // nothing listens: no request can be in flight
	case err != nil:
		return 0, err
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return 0, fmt.Errorf("%w: %v", ErrNoSlots, c.refusal("/slots", code))
	case code == http.StatusOK:
		busy := 0
		for _, s := range slots {
			if s.IsProcessing {
				busy++
			}
		}
		return busy, nil
	case code != http.StatusNotImplemented:
		return 0, fmt.Errorf("GET /slots: %d", code)
	case !hasFlag(c.spec, "--metrics"):
		return 0, ErrNoSlots
	}
	var fams map[string]*promtext.Family
	code, err = c.get(ctx, base+"/metrics", func(r io.Reader) (err error) { fams, err = parseMetrics(r); return err })
	if err != nil || code != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %d %v", code, err)
	}
	v, ok := metricValue(fams, "llamacpp:requests_processing")
	if !ok {
		return 0, ErrNoSlots
	}
	return int(v), nil
}

// probeClient asks one instance's server (and, in router mode, its
// children) with the instance's API key, if it has one.
type probeClient struct {
	spec   config.Instance
	base   string
	key    string
	keyErr error
}

func newProbeClient(spec config.Instance) probeClient {
	c := probeClient{spec: spec, base: spec.ProbeURL()}
	c.key, c.keyErr = spec.APIKey()
	return c
}

// loops are the base URLs of the servers whose worker loops show the
// instance's liveness: its own, or in router mode its loaded models'
// children (none while no model is loaded). It asks the router's /models,
// which never loads a model; /slots?model=X would.
func (c probeClient) loops(ctx context.Context) ([]string, error) {
	if !c.spec.RouterMode() {
		return []string{c.base}, nil
	}
	var list routerModels
	code, err := c.get(ctx, c.base+"/models", func(r io.Reader) error { return json.NewDecoder(io.LimitReader(r, 4<<20)).Decode(&list) })
	if err := expect200("/models", code, err, c.spec.LivenessTimeout); err != nil {
		return nil, err
	}
	host := c.base[:strings.LastIndexByte(c.base, ':')]
	var out []string
	for _, m := range list.Loaded() {
		out = append(out, host+":"+strconv.Itoa(m.Port))
	}
	return out, nil
}

// RouterModel is one model a llama.cpp router-mode server offers.
type RouterModel struct {
	ID     string `json:"id"`
	Status string `json:"status"` // loaded, loading, unloaded, …
	Port   int    `json:"port,omitempty"`
}

// routerModels is the router's GET /models answer, as far as we read it.
type routerModels struct {
	Data []struct {
		ID     string `json:"id"`
		Status struct {
			Value string   `json:"value"`
			Args  []string `json:"args"`
		} `json:"status"`
	} `json:"data"`
}

// Models lists the models with their status and, when loaded, the port
// of the child server that runs them.
func (l routerModels) Models() []RouterModel {
	out := make([]RouterModel, 0, len(l.Data))
	for _, d := range l.Data {
		m := RouterModel{ID: d.ID, Status: d.Status.Value}
		for i, a := range d.Status.Args {
			if a == "--port" && i+1 < len(d.Status.Args) {
				m.Port, _ = strconv.Atoi(d.Status.Args[i+1])
			}
		}
		out = append(out, m)
	}
	return out
}

// Loaded are the models whose child server runs.
func (l routerModels) Loaded() []RouterModel {
	var out []RouterModel
	for _, m := range l.Models() {
		if m.Status == "loaded" && m.Port > 0 {
			out = append(out, m)
		}
	}
	return out
}

// RouterStatus reads the models of a router-mode instance from its
// /models (status shows them); it loads nothing.
func RouterStatus(ctx context.Context, spec config.Instance) ([]RouterModel, error) {
	c := newProbeClient(spec)
	var list routerModels
	code, err := c.get(ctx, c.base+"/models", func(r io.Reader) error { return json.NewDecoder(io.LimitReader(r, 4<<20)).Decode(&list) })
	if err := expect200("/models", code, err, 0); err != nil {
		return nil, err
	}
	return list.Models(), nil
}

func (c probeClient) readTokens(ctx context.Context, base string) (int64, bool) {
	var fams map[string]*promtext.Family
	code, err := c.get(ctx, base+"/metrics", func(r io.Reader) (err error) { fams, err = parseMetrics(r); return err })
	if err != nil || code != http.StatusOK {
		return 0, false
	}
	p, ok1 := metricValue(fams, "llamacpp:prompt_tokens_total")
	g, ok2 := metricValue(fams, "llamacpp:tokens_predicted_total")
	return int64(p + g), ok1 || ok2
}

func parseMetrics(r io.Reader) (map[string]*promtext.Family, error) {
	return promtext.Parse(io.LimitReader(r, 4<<20))
}

func metricValue(fams map[string]*promtext.Family, name string) (float64, bool) {
	return promtext.Value(fams, name)
}

// probeClient opens a connection per request: an idle keep-alive
// connection would hold one of llama-server's HTTP threads between probes.
var probeHTTP = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// get fetches url within ctx, with the instance's key, and hands a 200
// body to read (if not nil).
func (c probeClient) get(ctx context.Context, url string, read func(io.Reader) error) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	resp, err := probeHTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK && read != nil {
		if err := read(resp.Body); err != nil {
			return resp.StatusCode, err
		}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, nil
}

// expect200 says what went wrong with GET path, if anything; timeout is
// the deadline the request had.
func expect200(path string, code int, err error, timeout time.Duration) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded) && timeout > 0:
		return fmt.Errorf("GET %s: no answer within %s", path, timeout)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("GET %s: no answer in time", path)
	case err != nil:
		return fmt.Errorf("GET %s: %w", path, err)
	case code != http.StatusOK:
		return fmt.Errorf("GET %s: %d %s", path, code, http.StatusText(code))
	}
	return nil
}

func hasFlag(spec config.Instance, flag string) bool { return slices.Contains(spec.Cmd, flag) }

// progressReader counts the bytes of the lines a process writes into its
// log pipe that show its slot loop at work — the watchdog's "new output"
// signal. Only the loop's own lines count ("slot launch_slot_", "slot
// update_slots: … prompt processing progress", "slot print_timing", …):
// llama-server's HTTP threads keep logging while the loop is stuck, for
// every request that arrives ("srv  params_from_: Chat format: …",
// "got exception", "unauthorized") and every one abandoned ("stop: cancel
// task"), so a client retrying against a hung server, or our own probes,
// must never look like its progress. Lines it writes in answer to our
// probes while idle ("all slots are idle") are left out too.
type progressReader struct {
	r     io.Reader
	n     *atomic.Int64 // bytes of lines that are not echoes
	lines *atomic.Int64 // lines read, echoes too
	head  []byte        // the current line's first bytes, enough to tell an echo
	size  int64         // the current line's length so far
}

var probeEchoes = [][]byte{[]byte("cancel task"), []byte("all slots are idle"), []byte("unauthorized"), []byte("log_server_r")}

const echoHead = 256

func (c *progressReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.scan(p[:n])
	return n, err
}

func (c *progressReader) scan(b []byte) {
	for len(b) > 0 {
		line := b
		i := bytes.IndexByte(b, '\n')
		if i >= 0 {
			line = b[:i+1]
		}
		c.size += int64(len(line))
		if room := echoHead - len(c.head); room > 0 {
			c.head = append(c.head, line[:min(room, len(line))]...)
		}
		if i < 0 {
			return
		}
		if isLoopLine(c.head) && !isEcho(c.head) {
			c.n.Add(c.size)
		}
		if c.lines != nil {
			c.lines.Add(1)
		}
		c.head, c.size = c.head[:0], 0
		b = b[i+1:]
	}
}

// isLoopLine says whether llama-server's slot loop wrote the line: its
// tag is "slot" ("0.01.571.300 I slot print_timing: id  3 | …").
func isLoopLine(line []byte) bool {
	return bytes.HasPrefix(line, []byte("slot ")) || bytes.Contains(line, []byte(" slot "))
}

func isEcho(line []byte) bool {
	for _, e := range probeEchoes {
		if bytes.Contains(line, e) {
			return true
		}
	}
	return false
}
