package supervise

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/llamaboot/llamaboot/internal/access"
	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/dirs"
	"github.com/llamaboot/llamaboot/internal/logfile"
)

// sink is an instance's log. Each process writes into a pipe (the child
// gets the write end as its stdout and stderr: os/exec's own copying would
// end only in Wait, and the reaper, not Wait, collects these children) and
// a logfile.Sink copies it line by line into the instance's logfile.Log,
// which rotates the file and feeds `logs -f`, and to stdout when
// log_to_stdout is on. The Log outlives processes; the copier is per
// process, ending at its pipe's EOF.
type sink struct {
	name, path string
	log        *logfile.Log

	lines atomic.Int64 // lines its processes wrote
	seen  atomic.Int64 // bytes of lines its processes wrote, but for answers to our probes: a watchdog progress signal

	mu      sync.Mutex
	copying chan struct{} // closed when the current copier reached EOF
	reader  *os.File      // the read end of the current process's pipe
}

// openSink opens spec's log; onLoss, when set, hears when writing it
// starts and stops losing output.
func openSink(spec config.Instance, onLoss func(logfile.LossReport)) (*sink, error) {
	if err := dirs.MkdirAll(filepath.Dir(spec.LogFile), 0o755); err != nil {
		return nil, access.Explain(err, spec.LogSetting)
	}
	l, err := logfile.OpenLog(spec.LogFile, spec.LogMaxSize, spec.LogMaxFiles)
	if err != nil {
		return nil, access.Explain(err, spec.LogSetting)
	}
	if onLoss != nil {
		l.OnLoss(onLoss)
	}
	done := make(chan struct{})
	close(done)
	return &sink{name: spec.Name, path: spec.LogFile, log: l, copying: done}, nil
}

// attach makes a pipe for the next process and starts copying from it, to
// stdout too when it is not nil. The caller passes the returned write end
// to the child and closes its own copy once the child has started.
func (s *sink) attach(stdout io.Writer) (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("log pipe for %s: %w", s.path, err)
	}
	ls := logfile.NewSink(s.name, s.log, stdout)
	done := make(chan struct{})
	s.mu.Lock()
	s.copying, s.reader = done, r
	s.mu.Unlock()
	go func() {
		defer close(done)
		ls.Run(&progressReader{r: r, n: &s.seen, lines: &s.lines})
		r.Close()
	}()
	return w, nil
}

// notef writes llamaboot's own line into the log.
func (s *sink) notef(format string, args ...any) {
	s.log.Write(fmt.Appendf(nil, "[llamaboot] "+format+"\n", args...))
	s.log.Flush()
}

// copied is closed once the last process's output is all in the log: EOF
// on its pipe, once it and whatever inherited the pipe have exited (the
// owner waits for it as an input, bounded by flushLimit).
func (s *sink) copied() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.copying
}

// abandon gives up the exited process's output once the owner judged the
// exit without its EOF (flushLimit): something outside the process group
// (a helper that escaped with setsid) still holds the pipe's write end.
// Closing the read end ends the copier, frees the descriptor (one more per
// crash otherwise) and makes the holder's next write fail (EPIPE, SIGPIPE).
// It returns the holders /proc shows ("pid 12 (sleep)"), or nil when the
// output was all in after all.
func (s *sink) abandon() (holders []string, abandoned bool) {
	s.mu.Lock()
	r, done := s.reader, s.copying
	s.mu.Unlock()
	select {
	case <-done:
		return nil, false
	default:
	}
	if r == nil {
		return nil, false
	}
	// Stat, not Fd: Fd would make the read blocking, and Close would then
	// not end the copier's read.
	if fi, err := r.Stat(); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			holders = pipeHolders(st.Ino)
		}
	}
	r.Close() // the copier's read fails now: it ends as at EOF
	return holders, true
}

// pipeHolders names the processes other than this one that have the pipe
// with inode ino open, from /proc (those of other users only when root).
func pipeHolders(ino uint64) []string {
	want := fmt.Sprintf("pipe:[%d]", ino)
	procs, _ := os.ReadDir("/proc")
	var out []string
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		fds, _ := os.ReadDir("/proc/" + p.Name() + "/fd")
		for _, fd := range fds {
			if l, _ := os.Readlink("/proc/" + p.Name() + "/fd/" + fd.Name()); l == want {
				comm, _ := os.ReadFile("/proc/" + p.Name() + "/comm")
				out = append(out, fmt.Sprintf("pid %d (%s)", pid, strings.TrimSpace(string(comm))))
				break
			}
		}
	}
	return out
}

// tail returns the log's last n lines, across rotations.
func (s *sink) tail(n int) string {
	lines, _ := logfile.Tail(s.path, n)
	return string(bytes.TrimRight(bytes.Join(lines, nil), "\n"))
}
