package supervise

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/logfile"
	"github.com/llamaboot/llamaboot/internal/testutil"
)

// A follower of an instance's log keeps following across a restart that
// changed only the rotation bounds, and ends when the log file changes.
func TestLogFollowersAcrossRestarts(t *testing.T) {
	h := newHarness(t)
	out := &testutil.SyncBuffer{}
	h.sup.deps.Stdout = logfile.Locked(out)
	spec := h.spec("a", 8001, "on-failure")
	spec.LogToStdout = true
	h.startReady(spec)
	l, _, err := h.sup.Log("a")
	if err != nil || l == nil {
		t.Fatalf("no log: %v", err)
	}
	tail, f, err := l.Follow(10, 100)
	if err != nil || !bytes.Contains(bytes.Join(tail, nil), []byte("starting /x/llama-server")) {
		t.Fatalf("tail %q %v", tail, err)
	}
	bigger := spec
	bigger.LogMaxSize, bigger.LogMaxFiles = 1<<20, 5
	if res, err := h.sup.Apply([]config.Instance{bigger}); err != nil || len(res.Changed) != 1 {
		t.Fatalf("apply: %+v %v", res, err)
	}
	h.ready("a")
	// The second process's note and output come after the first's output
	// (which the follower may or may not have had in its tail).
	if readLine(t, f, "starting /x/llama-server") == "" || readLine(t, f, "output of a") == "" {
		t.Fatal("the follower saw nothing of the restarted process")
	}
	if l2, _, _ := h.sup.Log("a"); l2 != l {
		t.Error("a restart that kept the log file opened a new log")
	}
	if !strings.Contains(out.String(), "[a] output of a\n") {
		t.Errorf("log_to_stdout: stdout = %q", out.String())
	}

	moved := bigger
	moved.LogFile = filepath.Join(t.TempDir(), "moved.log")
	h.sup.Apply([]config.Instance{moved})
	h.ready("a")
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-f.C:
			if !ok {
				return // the old log closed
			}
		case <-deadline:
			t.Fatal("the follower of the old log file was not ended")
		}
	}
}

func readLine(t *testing.T, f *logfile.Follower, want string) string {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case l, ok := <-f.C:
			if !ok {
				t.Fatal("follower closed")
			}
			if strings.Contains(string(l), want) {
				return string(l)
			}
		case <-deadline:
			return ""
		}
	}
}
