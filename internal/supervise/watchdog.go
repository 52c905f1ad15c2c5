package supervise

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
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
// probes in a row failed AND the server showed no progress in that window
// (no new bytes of output through its log pipe, no change in its /metrics
// token counters). Then SIGKILL to its process group (a wedged server may
// ignore SIGTERM) and a restart under its policy, reason hung.

// LiveProbe is one liveness probe's result.
type LiveProbe struct {
	Err       error // nil: it answered; else which request failed and how
	Tokens    int64 // prompt + predicted tokens, from /metrics
	HasTokens bool  // Tokens was read this time

	// Taken by the watchdog as the probe began, so the owner judges the
	// probe by then, not by when it got to the result.
	at       time.Time
	logBytes int64
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
	told       bool      // EvBusy said for this streak
}

// startWatch starts probing the process, if the watchdog is on for it.
func (o *owner) startWatch() {
	o.live = liveState{mark: progress{logBytes: o.sink.seen.Load()}}
	o.live.streakMark = o.live.mark
	if !o.spec.Watched() {
		return
	}
	ctx, cancel := context.WithCancel(o.probeCtx)
	o.stopWatch = cancel
	go watch(ctx, o.spec, o.d.Clock, o.d.Liveness, &o.sink.seen, o.proc.PID(), o.send)
}

// watch probes on a fixed schedule (every interval from the start, so a
// hang is found within interval×failures+timeout) until ctx ends. It
// never signals the process: only the owner does.
func watch(ctx context.Context, spec config.Instance, clock Clock, probe Liveness, logBytes *atomic.Int64, pid int, send func(msg) error) {
	next := clock.Now().Add(spec.LivenessInterval)
	for {
		select {
		case <-clock.After(next.Sub(clock.Now())):
		case <-ctx.Done():
			return
		}
		at, seen := clock.Now(), logBytes.Load()
		pctx, cancel := context.WithTimeout(ctx, spec.LivenessTimeout)
		r := probe(pctx, spec)
		cancel()
		r.at, r.logBytes = at, seen
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
	mark := progress{logBytes: r.logBytes, tokens: w.tokens}
	moved := mark != w.mark
	w.mark = mark
	if r.Err == nil {
		*w = liveState{mark: mark, streakMark: mark, tokens: w.tokens}
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
		return o.killHung(fmt.Errorf("%d liveness probe(s) in a row failed over %s with no log output and no token progress meanwhile (last: %v)",
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
	o.reason = r
	o.stopWatch()
	o.armKill(grace)
	o.draining = true
	limit := min(o.spec.DrainTimeout, o.killGrace/2)
	go drain(o.probeCtx, o.spec, o.d.Clock, o.d.Slots, limit, o.proc.PID(), o.send)
	return Stopping
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
}

// drained sends SIGTERM once the drain is over.
func (o *owner) drained(m msg) State {
	if !o.draining {
		return Stopping
	}
	o.draining = false
	d := m.drain
	switch {
	case d.busy > 0 || d.waited:
		o.emit(Event{Kind: EvDrained, State: Stopping, PID: o.proc.PID(), Took: d.took, Busy: d.busy})
	case d.err != nil:
		o.sink.notef("%s: not drained before stopping: %v", o.spec.Name, d.err)
	}
	return o.terminate(o.reason, 0)
}

// HTTPLiveness probes /health and /slots (/props where /slots is off),
// and reads the token counters from /metrics where --metrics is on, all at
// once within ctx's deadline.
func HTTPLiveness(ctx context.Context, spec config.Instance) LiveProbe {
	base := spec.ProbeURL()
	var res LiveProbe
	tokens := make(chan LiveProbe, 1)
	if hasFlag(spec, "--metrics") {
		go func() {
			var r LiveProbe
			r.Tokens, r.HasTokens = readTokens(ctx, base)
			tokens <- r
		}()
	} else {
		tokens <- LiveProbe{}
	}
	loop := make(chan error, 1)
	go func() {
		code, err := get(ctx, base+"/slots", nil)
		if err == nil && code == http.StatusNotImplemented {
			code, err = get(ctx, base+"/props", nil)
			loop <- expect200("/props", code, err, spec.LivenessTimeout)
			return
		}
		loop <- expect200("/slots", code, err, spec.LivenessTimeout)
	}()
	code, err := get(ctx, base+"/health", nil)
	res.Err = expect200("/health", code, err, spec.LivenessTimeout)
	if err := <-loop; res.Err == nil {
		res.Err = err
	}
	t := <-tokens
	res.Tokens, res.HasTokens = t.Tokens, t.HasTokens
	return res
}

// HTTPBusySlots counts the slots /slots shows processing; where /slots is
// off, it reads llamacpp:requests_processing from /metrics.
func HTTPBusySlots(ctx context.Context, spec config.Instance) (int, error) {
	base := spec.ProbeURL()
	var slots []struct {
		IsProcessing bool `json:"is_processing"`
	}
	code, err := get(ctx, base+"/slots", func(r io.Reader) error { return json.NewDecoder(io.LimitReader(r, 4<<20)).Decode(&slots) })
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return 0, nil // nothing listens: no request can be in flight
	case err != nil:
		return 0, err
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
	case !hasFlag(spec, "--metrics"):
		return 0, ErrNoSlots
	}
	var fams map[string]*promtext.Family
	code, err = get(ctx, base+"/metrics", func(r io.Reader) (err error) { fams, err = parseMetrics(r); return err })
	if err != nil || code != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %d %v", code, err)
	}
	v, ok := metricValue(fams, "llamacpp:requests_processing")
	if !ok {
		return 0, ErrNoSlots
	}
	return int(v), nil
}

func readTokens(ctx context.Context, base string) (int64, bool) {
	var fams map[string]*promtext.Family
	code, err := get(ctx, base+"/metrics", func(r io.Reader) (err error) { fams, err = parseMetrics(r); return err })
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
var probeClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// get fetches url within ctx and hands a 200 body to read (if not nil).
func get(ctx context.Context, url string, read func(io.Reader) error) (int, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := probeClient.Do(req)
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
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("GET %s: no answer within %s", path, timeout)
	case err != nil:
		return fmt.Errorf("GET %s: %w", path, err)
	case code != http.StatusOK:
		return fmt.Errorf("GET %s: %d %s", path, code, http.StatusText(code))
	}
	return nil
}

func hasFlag(spec config.Instance, flag string) bool { return slices.Contains(spec.Cmd, flag) }

// countingReader counts the bytes a process writes into its log pipe: the
// watchdog's "new output" signal.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
