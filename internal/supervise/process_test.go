package supervise

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/llamaboot/llamaboot/internal/config"
)

// reapInTest makes the test process a child subreaper (orphans of its
// children come to it) and returns a reaper that reaps on every SIGCHLD
// until the test ends.
func reapInTest(t *testing.T) *Reaper {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGCHLD)
	r := NewReaper()
	stop := make(chan struct{})
	t.Cleanup(func() {
		close(stop)
		signal.Stop(sigs)
		unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	})
	go func() {
		for {
			select {
			case <-sigs:
				r.Reap()
			case <-stop:
				return
			}
		}
	}()
	return r
}

// TestRealProcess runs a real child through the reaper: its output goes
// through the pipe to the log, SIGTERM reaches its group, and what it left
// in its group (a helper ignoring SIGTERM) is killed once it has exited.
func TestRealProcess(t *testing.T) {
	r := reapInTest(t)

	dir := t.TempDir()
	helperPID := filepath.Join(dir, "helper.pid")
	ready := func(_ context.Context, _ config.Instance, _ int, report func(Probe)) { report(ProbeReady) }
	sup := New(r, Policy{}, os.Environ(), Deps{Probe: ready})
	events, cancel := sup.Subscribe()
	defer cancel()
	spec := config.Instance{Name: "real", Executable: "/bin/sh", Host: "127.0.0.1", Port: 0, LogFile: filepath.Join(dir, "logs", "real.log"),
		Cmd:          []string{"-c", "echo hello from the child; echo to stderr >&2; sh -c 'trap \"\" TERM; exec sleep 30' & echo $! > " + helperPID + "; exec sleep 30"},
		ReadyTimeout: time.Minute, StopTimeout: 5 * time.Second}
	if _, err := sup.Apply([]config.Instance{spec}); err != nil {
		t.Fatal(err)
	}
	wait := func(kind EventKind) Event {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case e := <-events:
				if e.Kind == kind {
					return e
				}
			case <-deadline:
				t.Fatalf("no %s event", kind)
			}
		}
	}
	started := wait(EvStarted)
	wait(EvReady)
	if pgid, _ := syscall.Getpgid(started.PID); pgid != started.PID {
		t.Errorf("not in its own process group: %d", pgid)
	}
	var helper int
	deadline := time.Now().Add(10 * time.Second)
	for helper == 0 && time.Now().Before(deadline) {
		b, _ := os.ReadFile(helperPID)
		helper, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		time.Sleep(5 * time.Millisecond)
	}
	_, _ = sup.Control("real", OpStop)
	if e := wait(EvStopped); e.Exit != "killed by SIGTERM" {
		t.Errorf("stopped: %+v", e)
	}
	b, _ := os.ReadFile(spec.LogFile)
	for _, want := range []string{"[llamaboot] ", "hello from the child\n", "to stderr\n"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("log has no %q:\n%s", want, b)
		}
	}
	sup.StopAll(time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat("/proc/" + strconv.Itoa(helper)); err != nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Errorf("the helper %d the server left in its group is still there", helper)
}
