package supervise

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/printer"
)

// TestPrintAndClose: the printer gets every event in order, errors on the
// error stream, requested restarts unprinted; CloseEvents ends it once the
// queue is read.
func TestPrintAndClose(t *testing.T) {
	var out, errb bytes.Buffer
	var b broadcaster
	events, _ := b.Subscribe()
	done := make(chan struct{})
	go func() {
		Print(printer.New(&out, &errb, "[x]", false), events)
		close(done)
	}()
	b.publish(Event{Instance: "a", Kind: EvRestarting, Delay: time.Second})
	b.publish(Event{Instance: "a", Kind: EvExited, Reason: ReasonRestartRequested})
	b.publish(Event{Instance: "a", Kind: EvFailed, Err: errors.New("port taken")})
	b.close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Print did not end after close")
	}
	if out.String() != "[x] a restarting in 1.0s\n" || errb.String() != "[x] ERROR: a failed: port taken\n" {
		t.Errorf("out %q err %q", out.String(), errb.String())
	}
	// Subscribing after close gets a closed channel.
	late, cancel := b.Subscribe()
	defer cancel()
	if _, open := <-late; open {
		t.Error("late subscription is open")
	}
	if EvKilled.String() != "killed" {
		t.Error(EvKilled.String())
	}
}

// TestCancelledSubscriberDoesNotBlock: a subscriber that stops reading
// and cancels never holds up the publisher.
func TestCancelledSubscriberDoesNotBlock(t *testing.T) {
	var b broadcaster
	_, cancel := b.Subscribe()
	for i := range 1000 {
		b.publish(Event{Instance: fmt.Sprint(i)})
	}
	cancel()
	cancel()
	live, cancel2 := b.Subscribe()
	defer cancel2()
	b.publish(Event{Instance: "after"})
	if e := <-live; e.Instance != "after" {
		t.Errorf("%+v", e)
	}
}

// TestHTTPProbeNeedsOurListener: HTTPProbe reports ready for a 200 from
// the pid that holds the port, and not for another pid.
func TestHTTPProbeNeedsOurListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})}
	go srv.Serve(ln)
	defer srv.Close()
	spec := config.Instance{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port}
	got := make(chan Probe, 1)
	HTTPProbe(context.Background(), spec, os.Getpid(), func(p Probe) { got <- p })
	if p := <-got; p != ProbeReady {
		t.Errorf("%v", p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	HTTPProbe(ctx, spec, os.Getppid(), func(p Probe) { t.Errorf("ready reported for another pid: %v", p) })
}

// TestStartCmdAndChildren: the container's command is our child, seen by
// Children, its status through the reaper.
func TestStartCmdAndChildren(t *testing.T) {
	r := reapInTest(t)
	sup := New(r, Policy{}, os.Environ(), Deps{})
	defer sup.CloseEvents()
	cmd, exited, err := sup.StartCmd([]string{"sleep", "30"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(Children(), cmd.Process.Pid) {
		t.Errorf("%d not among our children %v", cmd.Process.Pid, Children())
	}
	if parentOf(-5) != -1 {
		t.Error("parent of nothing")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case ws := <-exited:
		if describeExit(ws) != "killed by SIGTERM" || ExitCode(ws) != 143 {
			t.Errorf("%s %d", describeExit(ws), ExitCode(ws))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no status")
	}
}

// A reader that stops reading holds at most maxQueue events queued (and a
// batch as long in its pump); the rest are dropped, counted, and said once
// it reads again.
func TestSlowReaderIsBounded(t *testing.T) {
	var b broadcaster
	ch, cancel := b.Subscribe()
	defer cancel()
	b.mu.Lock()
	var s *subscriber
	for s = range b.subs {
	}
	b.mu.Unlock()
	const n = 3 * maxQueue
	for i := range n {
		b.publish(Event{Instance: "a", Kind: EvStarted, PID: i})
	}
	s.mu.Lock()
	queued := len(s.queue)
	s.mu.Unlock()
	if queued > maxQueue {
		t.Fatalf("queued %d of %d for a reader that does not read", queued, n)
	}
	// The reader comes back: every event is either read or counted in an
	// EvLost, and what was held for it (the pump's batch, taken whenever
	// the pump ran, and the queue) is bounded.
	got, lost := 0, 0
	guard := time.After(30 * time.Second)
	for got+lost < n {
		select {
		case e := <-ch:
			if e.Kind == EvLost {
				lost += e.Busy
			} else {
				got++
			}
		case <-guard:
			t.Fatalf("read %d, told of %d lost, of %d", got, lost, n)
		}
	}
	if got > 2*maxQueue || got+lost != n {
		t.Errorf("read %d (at most 2×%d may be held), told of %d lost, of %d", got, maxQueue, lost, n)
	}
}
