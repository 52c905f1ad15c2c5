package supervise

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
)

// Output held open past the flush limit by something outside the group is
// given up: entry closes its read end, so the holder's next write fails
// (EPIPE) instead of entry keeping the pipe for good, and the log says so.
func TestHeldOutputIsGivenUp(t *testing.T) {
	h := newHarness(t)
	h.starter.holdPipe = true
	spec := h.spec("a", 8001, "on-failure")
	p := h.startReady(spec)
	t.Cleanup(func() { p.out.Close() })
	h.control("a", OpStop)
	h.clock.expectTimer(t, flushLimit)
	h.clock.Advance(flushLimit)
	h.expect("a", EvStopped)
	if _, err := p.out.WriteString("late\n"); !errors.Is(err, syscall.EPIPE) {
		t.Errorf("a write to the given-up pipe: %v, want EPIPE", err)
	}
	b, _ := os.ReadFile(spec.LogFile)
	if n := strings.Count(string(b), "still held open"); n != 1 {
		t.Errorf("%d notes of the held output in the log:\n%s", n, b)
	}
}
