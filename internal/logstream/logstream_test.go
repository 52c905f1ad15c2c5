package logstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/logfile"
	"github.com/llamaboot/llamaboot/internal/supervise"
	"github.com/llamaboot/llamaboot/internal/supervise/supervisetest"
)

// A `logs -f` reader too slow for the log is told how many lines it
// missed; the log itself never waits for it.
func TestSlowReaderIsToldWhatItMissed(t *testing.T) {
	l, err := logfile.OpenLog(filepath.Join(t.TempDir(), "a.log"), 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	_, f, _ := l.Follow(0, 2)
	for i := range 10 {
		fmt.Fprintf(l, "line %d\n", i)
	}
	l.Close()
	var buf bytes.Buffer
	(&lineWriter{w: &buf}).follow(context.Background(), "a", f)
	if want := "[llamaboot] 8 lines of a not shown here: this reader fell behind (they are in the log file)\nline 0\nline 1\n"; buf.String() != want {
		t.Errorf("got %q\nwant %q", buf.String(), want)
	}
}

// syncBuffer is a reader's screen: written by the stream, read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until the screen holds n copies of line.
func (s *syncBuffer) waitFor(t *testing.T, line string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(s.String(), line) < n {
		if time.Now().After(deadline) {
			t.Fatalf("no %d× %q in %q", n, line, s.String())
		}
		time.Sleep(time.Millisecond)
	}
}

// `logs -f` of every instance follows each across its restarts and picks
// up an instance started meanwhile, each line prefixed with its name;
// `logs -f NAME` ends when NAME is removed.
func TestStreamFollowsRestartsAndNewInstances(t *testing.T) {
	h := supervisetest.New(t)
	a := h.Spec("a", 8001, "on-failure")
	if _, err := h.Sup.Apply([]config.Instance{a}); err != nil {
		t.Fatal(err)
	}
	h.Ready("a")
	all, err := Open(h.Sup, "", 10, true)
	if err != nil {
		t.Fatal(err)
	}
	one, err := Open(h.Sup, "a", 10, true)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var screen, screenA syncBuffer
	ended := make(chan struct{})
	go func() { all.Run(ctx, &screen) }()
	go func() { one.Run(ctx, &screenA); close(ended) }()
	screen.waitFor(t, "[a] output of a\n", 1)
	screenA.waitFor(t, "output of a\n", 1)

	if _, err := h.Sup.Control("a", supervise.OpRestart); err != nil {
		t.Fatal(err)
	}
	h.Ready("a")
	screen.waitFor(t, "[a] output of a\n", 2)
	b := h.Spec("b", 8002, "on-failure")
	if _, err := h.Sup.Apply([]config.Instance{a, b}); err != nil {
		t.Fatal(err)
	}
	h.Ready("b")
	screen.waitFor(t, "[b] output of b\n", 1)
	if strings.Contains(screenA.String(), "output of b") {
		t.Errorf("logs -f a shows b's lines: %q", screenA.String())
	}

	if _, err := h.Sup.Apply([]config.Instance{b}); err != nil { // a removed
		t.Fatal(err)
	}
	select {
	case <-ended:
	case <-time.After(30 * time.Second):
		t.Fatal("logs -f a did not end when a was removed")
	}
	cancel()
	all.Close()
	one.Close()
}

// A tail without follow is the last lines and ends; an unknown name is
// the supervisor's ErrUnknownInstance.
func TestStreamTailAndUnknown(t *testing.T) {
	h := supervisetest.New(t)
	h.StartReady(h.Spec("a", 8001, "on-failure"))
	st, err := Open(h.Sup, "a", 1, false)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	st.Run(context.Background(), &out)
	st.Close()
	if out.String() != "output of a\n" {
		t.Errorf("tail 1: %q", out.String())
	}
	if _, err := Open(h.Sup, "nope", 1, false); !errors.Is(err, supervise.ErrUnknownInstance) {
		t.Errorf("unknown name: %v", err)
	}
}
