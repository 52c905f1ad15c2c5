package router

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

// inst is a test instance: "a" plain, "a+od" on demand, "a+od+g" on demand
// in group g, "a+idle" with a 60 s idle_timeout.
func testTable(maxQueue, groupMax int, specs ...string) *Table {
	r := &config.Router{Listen: ":1", MaxWait: 10 * time.Minute, MaxQueue: maxQueue, Groups: map[string]int{"g": groupMax}}
	var ins []config.Instance
	for i, s := range specs {
		parts := strings.Split(s, "+")
		in := config.Instance{Name: parts[0], Host: "127.0.0.1", Port: 9000 + i}
		for _, p := range parts[1:] {
			switch p {
			case "od":
				in.Routing.OnDemand = true
			case "g":
				in.Routing.Group = "g"
			case "idle":
				in.Routing.IdleTimeout = time.Minute
			}
		}
		ins = append(ins, in)
	}
	return NewTable(r, ins)
}

// step is one input at a time (seconds from the start) and what the
// scheduler answers: the request's verdict, the actions, and the answers
// waiting requests got, in that order.
type step struct {
	at   float64
	do   string // "req a", "rel a", "ev a ready", "ev a stop-requested", "ev a failed", "tick", "cancel w1", "startfail a"
	want string
}

var t0 = time.Unix(1_000_000, 0)

func runSteps(t *testing.T, s *sched, steps []step) {
	t.Helper()
	var waiters []*waiter
	for n, st := range steps {
		now := t0.Add(time.Duration(st.at * float64(time.Second)))
		f := strings.Fields(st.do)
		var out []string
		var acts []action
		switch f[0] {
		case "req":
			v, w, a := s.acquire(now, f[1])
			acts = a
			switch {
			case w != nil:
				waiters = append(waiters, w)
				out = append(out, fmt.Sprintf("wait:w%d", len(waiters)))
			default:
				out = append(out, verdictWord(v))
			}
		case "rel":
			acts = s.release(now, f[1])
		case "tick":
			acts = s.tick(now)
		case "cancel":
			var i int
			fmt.Sscanf(f[1], "w%d", &i)
			if !s.cancel(waiters[i-1]) {
				out = append(out, "answered")
			}
		case "startfail":
			acts = s.startFailed(now, f[1], errors.New("boom"))
		case "ev":
			e := supervise.Event{Instance: f[1]}
			switch f[2] {
			case "started":
				e.Kind, e.State = supervise.EvStarted, supervise.Starting
			case "ready":
				e.Kind, e.State = supervise.EvReady, supervise.Ready
			case "stop-requested":
				e.Kind, e.Op = supervise.EvRequested, supervise.OpStop
			case "start-requested":
				e.Kind, e.Op = supervise.EvRequested, supervise.OpStart
			case "restart-requested":
				e.Kind, e.Op = supervise.EvRequested, supervise.OpRestart
			case "stopping":
				e.Kind, e.State = supervise.EvDrained, supervise.Stopping
			case "stopped":
				e.Kind, e.State = supervise.EvStopped, supervise.Stopped
			case "exited":
				e.Kind, e.State, e.Exit = supervise.EvStopped, supervise.Stopped, "exit code 0"
			case "failed":
				e.Kind, e.State, e.Err = supervise.EvFailed, supervise.Failed, errors.New("port 9000 is taken")
			default:
				t.Fatalf("step %d: no event %q", n, f[2])
			}
			acts = s.event(now, e)
		default:
			t.Fatalf("step %d: no input %q", n, st.do)
		}
		for _, a := range acts {
			if a.kind == actStart {
				out = append(out, "start:"+a.name)
			} else if a.kind == actNote {
				out = append(out, "note")
			} else if a.bound != "" {
				out = append(out, "stop:"+a.name+":bound")
			} else {
				out = append(out, "stop:"+a.name+":"+a.why)
			}
		}
		for k, w := range waiters {
			select {
			case v := <-w.reply:
				out = append(out, fmt.Sprintf("w%d:%s", k+1, verdictWord(v)))
			default:
			}
		}
		if got := strings.Join(out, " "); got != st.want {
			t.Fatalf("step %d (%s at %gs): got %q, want %q", n, st.do, st.at, got, st.want)
		}
	}
}

func verdictWord(v verdict) string {
	if v.serve {
		return "serve"
	}
	w := fmt.Sprint(v.code)
	if v.retryAfter > 0 {
		w += fmt.Sprintf("/retry%d", v.retryAfter)
	}
	for _, k := range []string{"operator", "failed", "stopped", "max_queue", "max_wait", "could not be started", "no longer"} {
		if strings.Contains(v.msg, k) {
			return w + "(" + k + ")"
		}
	}
	return w + "(" + v.msg + ")"
}

// ready is the supervisor's snapshot of instances that run.
func ready(names ...string) []supervise.Snapshot {
	var out []supervise.Snapshot
	for _, n := range names {
		out = append(out, supervise.Snapshot{Spec: config.Instance{Name: n}, State: supervise.Ready, WantUp: true})
	}
	return out
}

// stoppedOnRequest is the snapshot of instances someone asked to stop.
func stoppedOnRequest(names ...string) []supervise.Snapshot {
	var out []supervise.Snapshot
	for _, n := range names {
		out = append(out, supervise.Snapshot{Spec: config.Instance{Name: n}, State: supervise.Stopped, LastReason: supervise.ReasonStopRequested})
	}
	return out
}

func TestSched(t *testing.T) {
	cases := []struct {
		name  string
		table *Table
		snaps []supervise.Snapshot
		steps []step
	}{
		{"a ready instance is served at once", testTable(10, 1, "a"), ready("a"), []step{
			{0, "req a", "serve"}, {1, "rel a", ""},
		}},
		{"concurrent requests share one on-demand start", testTable(10, 1, "a+od"), nil, []step{
			{0, "req a", "wait:w1 start:a"},
			{0.1, "req a", "wait:w2"},
			{0.2, "ev a started", ""},
			{0.3, "req a", "wait:w3"},
			{2, "ev a ready", "w1:serve w2:serve w3:serve"},
			{3, "req a", "serve"},
		}},
		{"stopped by the operator: refused at once, waiters too", testTable(10, 1, "a+od", "b"), ready("b"), []step{
			{0, "req a", "wait:w1 start:a"},
			{1, "ev a stop-requested", "w1:503(operator)"},
			{2, "ev a stopped", ""},
			{3, "req a", "503(operator)"},
			{4, "ev b stop-requested", ""},
			{5, "req b", "503(operator)"},
			{6, "ev b start-requested", ""},
			{6.5, "ev b started", ""},
			{7, "req b", "wait:w2"},
			{8, "ev b ready", "w2:serve"},
		}},
		{"an operator's start in a full group evicts its least recently used idle member", testTable(10, 1, "small+od+g", "long+od+g"), nil, []step{
			{0, "req long", "wait:w1 start:long"},
			{0.5, "ev long started", ""},
			{1, "ev long ready", "w1:serve"},
			{2, "rel long", ""},
			{3, "ev small start-requested", ""},
			{3.1, "ev small started", "stop:long:bound"},
			{4, "ev long stopping", ""},
			{5, "ev long stopped", ""},
			{5.5, "ev small ready", ""},
			{6, "req long", "wait:w2 stop:small:evicted"},
		}},
		{"an operator's start in a full group waits for a busy member's requests, then evicts it", testTable(10, 1, "small+od+g", "long+od+g"), nil, []step{
			{0, "req long", "wait:w1 start:long"},
			{0.5, "ev long started", ""},
			{1, "ev long ready", "w1:serve"},
			{3, "ev small start-requested", ""},
			{3.1, "ev small started", "note"},
			{4, "ev small ready", ""},
			{5, "req small", "serve"},
			{6, "rel small", ""},
			{7, "rel long", "stop:long:bound"},
		}},
		{"an operator's start in a full group: a member busy past max_wait is stopped anyway", testTable(10, 1, "small+od+g", "long+od+g"), nil, []step{
			{0, "req long", "wait:w1 start:long"},
			{0.5, "ev long started", ""},
			{1, "ev long ready", "w1:serve"},
			{3.1, "ev small started", "note"},
			{4, "ev small ready", ""},
			{600, "tick", ""},
			{603.1, "tick", "stop:long:bound"},
		}},
		{"an operator's restart: requests wait for it and are served after", testTable(10, 1, "a"), ready("a"), []step{
			{0, "req a", "serve"},
			{1, "ev a restart-requested", ""},
			{1.5, "ev a stopping", ""},
			{2, "req a", "wait:w1"},
			{3, "rel a", ""},
			{4, "ev a started", ""},
			{5, "req a", "wait:w2"},
			{6, "ev a ready", "w1:serve w2:serve"},
		}},
		{"a router that finds instances stopped on request: the operator's, unless the router may stop them itself", testTable(10, 1, "a", "b+od", "c+idle"), stoppedOnRequest("a", "b", "c"), []step{
			{0, "req a", "503(operator)"},
			{1, "req b", "wait:w1 start:b"},
			{2, "req c", "wait:w2 start:c"},
		}},
		{"failed: refused with the reason", testTable(10, 1, "a+od"), nil, []step{
			{0, "req a", "wait:w1 start:a"},
			{1, "ev a failed", "w1:503(failed)"},
			{2, "req a", "503(failed)"},
		}},
		{"a start the supervisor refuses ends the wait", testTable(10, 1, "a+od"), nil, []step{
			{0, "req a", "wait:w1 start:a"},
			{0, "startfail a", "w1:503(could not be started)"},
			{1, "req a", "wait:w2 start:a"},
		}},
		{"not on demand and stopped on its own: refused", testTable(10, 1, "a"), ready("a"), []step{
			{0, "ev a exited", ""},
			{1, "req a", "503(stopped)"},
		}},
		{"each instance's queue is bounded by max_queue", testTable(2, 1, "a+od", "b+od"), nil, []step{
			{0, "req a", "wait:w1 start:a"},
			{0, "req a", "wait:w2"},
			{0, "req b", "wait:w3 start:b"},
			{0, "req a", "503/retry1(max_queue)"},
			{0, "req b", "wait:w4"},
			{0, "req b", "503/retry1(max_queue)"},
			{1, "ev a ready", "w1:serve w2:serve"},
			{1, "req a", "serve"},
			{1, "req b", "503/retry1(max_queue)"},
		}},
		{"the wait is bounded by max_wait", testTable(10, 1, "a+od"), nil, []step{
			{0, "req a", "wait:w1 start:a"},
			{300, "req a", "wait:w2"},
			{599.9, "tick", ""},
			{600, "tick", "w1:503/retry5(max_wait)"},
			{900, "tick", "w2:503/retry5(max_wait)"},
		}},
		{"a client that goes away leaves the queue", testTable(1, 1, "a+od"), nil, []step{
			{0, "req a", "wait:w1 start:a"},
			{1, "cancel w1", ""},
			{1, "req a", "wait:w2"},
			{2, "ev a ready", "w2:serve"},
			{3, "cancel w2", "answered"},
		}},
		{"idle stop after idle_timeout, never with a request in flight", testTable(10, 1, "a+idle"), ready("a"), []step{
			{0, "req a", "serve"},
			{100, "tick", ""},
			{110, "rel a", ""},
			{169.9, "tick", ""},
			{170, "tick", "stop:a:idle"},
			{171, "tick", ""},
			// A request while it unloads waits and starts it again.
			{172, "req a", "wait:w1"},
			{173, "ev a stop-requested", ""},
			{174, "ev a stopped", "start:a"},
			{175, "ev a ready", "w1:serve"},
		}},
		{"an instance unloaded when idle starts on the next request", testTable(10, 1, "a+idle"), ready("a"), []step{
			{60, "tick", "stop:a:idle"},
			{61, "ev a stop-requested", ""},
			{62, "ev a stopped", ""},
			{63, "req a", "wait:w1 start:a"},
			{64, "ev a ready", "w1:serve"},
		}},
		{"the group evicts its least recently used idle member", testTable(10, 2, "a+od+g", "b+od+g", "c+od+g"), nil, []step{
			{0, "req a", "wait:w1 start:a"},
			{1, "ev a ready", "w1:serve"},
			{2, "req b", "wait:w2 start:b"},
			{3, "ev b ready", "w2:serve"},
			{4, "rel b", ""},
			{5, "rel a", ""},
			// b was used least recently.
			{6, "req c", "wait:w3 stop:b:evicted"},
			{7, "req c", "wait:w4"},
			{8, "ev b stop-requested", ""},
			{9, "ev b stopped", "start:c"},
			{10, "ev c ready", "w3:serve w4:serve"},
			// b comes back in place of a, now the least recently used idle.
			{11, "req b", "wait:w5 stop:a:evicted"},
		}},
		{"never evict one with requests in flight: wait for it", testTable(10, 1, "a+od+g", "b+od+g"), nil, []step{
			{0, "req a", "wait:w1 start:a"},
			{1, "ev a ready", "w1:serve"},
			{2, "req b", "wait:w2"},
			{3, "req a", "serve"},
			{4, "rel a", ""},
			{5, "rel a", "stop:a:evicted"},
			{6, "ev a stopped", "start:b"},
			{7, "ev b ready", "w2:serve"},
		}},
		{"one waiting for its own start is not idle", testTable(10, 1, "a+od+g", "b+od+g"), nil, []step{
			{0, "req a", "wait:w1 start:a"},
			{1, "req b", "wait:w2"},
			{2, "ev a ready", "w1:serve"},
			{3, "rel a", "stop:a:evicted"},
			{4, "ev a stopped", "start:b"},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			runSteps(t, newSched(c.table, c.snaps, t0), c.steps)
		})
	}
}

func TestCapacity(t *testing.T) {
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	idle := func(n string, used int) Member { return Member{Name: n, Loaded: true, Idle: true, LastUse: at(used)} }
	busy := func(n string) Member { return Member{Name: n, Loaded: true} }
	cases := []struct {
		name    string
		max     int
		members []Member
		start   bool
		victims string
	}{
		{"empty group", 1, nil, true, ""},
		{"room left", 2, []Member{idle("a", 1)}, true, ""},
		{"full: the least recently used idle goes", 2, []Member{idle("a", 5), idle("b", 3)}, false, "b"},
		{"full: ties by name", 2, []Member{idle("b", 3), idle("a", 3)}, false, "a"},
		{"full of busy members: wait", 2, []Member{busy("a"), busy("b")}, false, ""},
		{"busy ones are skipped", 2, []Member{busy("a"), idle("b", 9)}, false, "b"},
		{"one freeing is still counted: wait for it", 1, []Member{{Name: "a", Freeing: true}}, false, ""},
		{"freeing covers the need", 2, []Member{{Name: "a", Freeing: true}, idle("b", 1)}, false, ""},
		{"a member starting counts", 1, []Member{{Name: "a", Starting: true}}, false, ""},
		{"stopped members do not count", 1, []Member{{Name: "a"}}, true, ""},
		{"two must go", 1, []Member{idle("a", 1), idle("b", 2)}, false, "a b"},
		{"not enough idle: none evicted", 1, []Member{idle("a", 1), busy("b")}, false, ""},
		{"the wanted one itself is not counted", 1, []Member{idle("x", 1)}, true, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start, victims := Capacity("x", c.max, c.members)
			if start != c.start || strings.Join(victims, " ") != c.victims {
				t.Errorf("got start=%v victims=%q, want start=%v victims=%q", start, victims, c.start, c.victims)
			}
		})
	}
}

// A reload keeps what the router knows of instances it keeps, and
// refuses the waiters of instances it drops.
func TestSchedSwap(t *testing.T) {
	s := newSched(testTable(10, 1, "a+od", "b+od"), nil, t0)
	runSteps(t, s, []step{{0, "req a", "wait:w1 start:a"}, {1, "ev a ready", "w1:serve"}, {2, "req b", "wait:w2 start:b"}})
	w := s.inst["b"].waiters[0]
	s.swap(testTable(10, 1, "a+od", "c"), ready("c"), t0)
	if v := <-w.reply; v.code != 404 {
		t.Errorf("waiter of a removed instance: %+v", v)
	}
	if s.inst["a"].inFlight != 1 || s.inst["a"].state != supervise.Ready || s.inst["c"].state != supervise.Ready || s.inst["b"] != nil {
		t.Errorf("after swap: a %+v, c %+v, b %+v", s.inst["a"], s.inst["c"], s.inst["b"])
	}
}
