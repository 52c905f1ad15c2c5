package router

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/supervise"
)

// simSupervisor plays the supervisor for the scheduler: it carries out
// the scheduler's starts and stops a step or more later, in any order, and
// says so with the events the real one publishes.
type simSupervisor struct {
	state   map[string]supervise.State
	pending []action
}

// TestSchedProperties drives the scheduler with random requests, ends,
// cancels, clock ticks and supervisor answers, and checks after every
// step what must always hold: the queue count is the waiters; nobody is
// served by an instance that is not ready; nothing is stopped with
// requests in flight or waiting; a group never runs more than max_loaded
// of the instances the router started; and at the end every waiter has
// an answer.
func TestSchedProperties(t *testing.T) {
	for seed := range uint64(300) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { schedProperties(t, seed) })
	}
}

func schedProperties(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	max := 1 + rng.IntN(2)
	names := []string{"a", "b", "c", "d"}
	table := testTable(3+rng.IntN(5), max, "a+od+g", "b+od+g", "c+od+g", "d+od+idle")
	s := newSched(table, nil, t0)
	sup := &simSupervisor{state: map[string]supervise.State{}}
	for _, n := range names {
		sup.state[n] = supervise.Stopped
	}
	now := t0
	served := map[string]int{} // requests served and not yet ended, by instance
	var waiting []*waiter
	byWaiter := map[*waiter]string{}
	check := func(step int, what string, acts []action) {
		t.Helper()
		q := 0
		for _, n := range names {
			i := s.inst[n]
			q += len(i.waiters)
			if i.inFlight != served[n] {
				t.Fatalf("step %d (%s): %s in flight %d, served %d", step, what, n, i.inFlight, served[n])
			}
		}
		if q != s.queued {
			t.Fatalf("step %d (%s): queued %d, waiters %d", step, what, s.queued, q)
		}
		for _, a := range acts {
			if i := s.inst[a.name]; a.kind == actStop && (i.inFlight > 0 || len(i.waiters) > 0) {
				t.Fatalf("step %d (%s): stop of %s with %d in flight and %d waiting", step, what, a.name, i.inFlight, len(i.waiters))
			}
		}
		up := 0
		for _, n := range []string{"a", "b", "c"} {
			if st := sup.state[n]; st == supervise.Starting || st == supervise.Ready || st == supervise.Stopping {
				up++
			}
		}
		if up > max {
			t.Fatalf("step %d (%s): %d of group g run, max_loaded %d: %v", step, what, up, max, sup.state)
		}
	}
	// collect takes the answers given to waiters.
	collect := func(step int) {
		kept := waiting[:0]
		for _, w := range waiting {
			select {
			case v := <-w.reply:
				n := byWaiter[w]
				if v.serve {
					if s.inst[n].state != supervise.Ready {
						t.Fatalf("step %d: a waiter of %s served while it is %s", step, n, s.inst[n].state)
					}
					served[n]++
				}
			default:
				kept = append(kept, w)
			}
		}
		waiting = kept
	}
	event := func(n string, kind supervise.EventKind, st supervise.State, op supervise.Op) []action {
		sup.state[n] = st
		return s.event(now, supervise.Event{Instance: n, Kind: kind, State: st, Op: op})
	}
	for step := range 400 {
		now = now.Add(time.Duration(rng.IntN(4000)) * time.Millisecond)
		var acts []action
		var what string
		switch r := rng.IntN(10); {
		case r < 4:
			n := names[rng.IntN(len(names))]
			what = "req " + n
			v, w, a := s.acquire(now, n)
			acts = a
			switch {
			case w != nil:
				waiting = append(waiting, w)
				byWaiter[w] = n
			case v.serve:
				if s.inst[n].state != supervise.Ready {
					t.Fatalf("step %d: %s served while %s", step, n, s.inst[n].state)
				}
				served[n]++
			}
		case r < 6:
			var busy []string
			for _, n := range names {
				if served[n] > 0 {
					busy = append(busy, n)
				}
			}
			if len(busy) == 0 {
				continue
			}
			n := busy[rng.IntN(len(busy))]
			what = "rel " + n
			served[n]--
			acts = s.release(now, n)
		case r < 7 && len(waiting) > 0:
			k := rng.IntN(len(waiting))
			w := waiting[k]
			what = "cancel"
			if s.cancel(w) {
				waiting = append(waiting[:k], waiting[k+1:]...)
			}
		case r < 8:
			what = "tick"
			acts = s.tick(now)
		default:
			if len(sup.pending) == 0 {
				continue
			}
			// The supervisor carries out one asked action, step by step.
			k := rng.IntN(len(sup.pending))
			a := sup.pending[k]
			sup.pending = append(sup.pending[:k], sup.pending[k+1:]...)
			what = fmt.Sprintf("sup %v %s", a.kind, a.name)
			if a.kind == actStart {
				acts = append(acts, event(a.name, supervise.EvStarted, supervise.Starting, supervise.OpNone)...)
				collect(step)
				check(step, what, acts)
				acts = append(acts, event(a.name, supervise.EvReady, supervise.Ready, supervise.OpNone)...)
			} else {
				acts = append(acts, event(a.name, supervise.EvRequested, sup.state[a.name], supervise.OpStop)...)
				acts = append(acts, event(a.name, supervise.EvDrained, supervise.Stopping, supervise.OpNone)...)
				collect(step)
				check(step, what, acts)
				acts = append(acts, event(a.name, supervise.EvStopped, supervise.Stopped, supervise.OpNone)...)
			}
		}
		sup.pending = append(sup.pending, acts...)
		collect(step)
		check(step, what, acts)
	}
	// Drain: the supervisor does everything asked, requests end, and past
	// max_wait every waiter has its answer.
	for range 50 {
		for _, n := range names {
			for served[n] > 0 {
				served[n]--
				sup.pending = append(sup.pending, s.release(now, n)...)
			}
		}
		for len(sup.pending) > 0 {
			a := sup.pending[0]
			sup.pending = sup.pending[1:]
			if a.kind == actStart {
				event(a.name, supervise.EvStarted, supervise.Starting, supervise.OpNone)
				sup.pending = append(sup.pending, event(a.name, supervise.EvReady, supervise.Ready, supervise.OpNone)...)
			} else {
				event(a.name, supervise.EvDrained, supervise.Stopping, supervise.OpNone)
				sup.pending = append(sup.pending, event(a.name, supervise.EvStopped, supervise.Stopped, supervise.OpNone)...)
			}
			collect(-1)
		}
		now = now.Add(table.MaxWait)
		sup.pending = append(sup.pending, s.tick(now)...)
		collect(-1)
	}
	if len(waiting) > 0 || s.queued != 0 {
		t.Fatalf("%d waiters never answered (queued %d)", len(waiting), s.queued)
	}
}

// FuzzRouted sends arbitrary bodies to a routed endpoint: each is served,
// or refused with an OpenAI-shaped 4xx, never a panic or a 5xx.
func FuzzRouted(f *testing.F) {
	for _, b := range []string{`{"model":"a"}`, `{"model":"zz"}`, `{}`, `[]`, `{"model":1}`, `{"model":"a","x":[1,{"y":null}]}`, "", "\x00{", `{"model":"a"`} {
		f.Add(b)
	}
	srv, _ := listening(f, nil)
	f.Fuzz(func(t *testing.T, body string) {
		resp, err := http.Post("http://"+srv.Addr()+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 && (resp.StatusCode < 400 || resp.StatusCode >= 500) {
			t.Fatalf("body %q: status %d", body, resp.StatusCode)
		}
	})
}
