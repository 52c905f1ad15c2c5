package supervise

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/llamaboot/llamaboot/internal/dirs"
	"github.com/llamaboot/llamaboot/internal/logfile"
)

// sink is an instance's log. Each process writes into a pipe (the child
// gets the write end as its stdout and stderr: os/exec's own copying would
// end only in Wait, and the reaper, not Wait, collects these children) and
// a logfile.Sink copies it line by line to the instance's log file, where
// rotation happens, and to followers. The file outlives processes; the
// copier is per process, ending at its pipe's EOF.
type sink struct {
	name, path string
	file       *logfile.Writer
	stdout     io.Writer // a [name]-prefixed copy, or nil

	mu      sync.Mutex
	cur     *logfile.Sink
	copying chan struct{} // closed when the current copier reached EOF
}

func openSink(name, path string, stdout io.Writer) (*sink, error) {
	if err := dirs.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create log dir for %s: %w", path, err)
	}
	w, err := logfile.NewWriter(path, 0, 1)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	close(done)
	return &sink{name: name, path: path, file: w, stdout: stdout, copying: done}, nil
}

// attach makes a pipe for the next process and starts copying from it. The
// caller passes the returned write end to the child and closes its own
// copy once the child has started.
func (s *sink) attach() (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("log pipe for %s: %w", s.path, err)
	}
	ls := logfile.NewSink(s.name, s.file, s.stdout)
	done := make(chan struct{})
	s.mu.Lock()
	s.cur, s.copying = ls, done
	s.mu.Unlock()
	go func() {
		defer close(done)
		ls.Run(r)
		r.Close()
	}()
	return w, nil
}

// notef writes llamaboot's own line into the log.
func (s *sink) notef(format string, args ...any) {
	s.file.Write(fmt.Appendf(nil, "[llamaboot] "+format+"\n", args...))
	s.file.Flush()
}

// drain waits until the last process's output is in the file: EOF on its
// pipe, once it and whatever inherited the pipe have exited. A daemonised
// grandchild may hold the pipe open forever, hence the bound.
func (s *sink) drain(limit time.Duration) {
	s.mu.Lock()
	done := s.copying
	s.mu.Unlock()
	select {
	case <-done:
	case <-time.After(limit):
	}
}

func (s *sink) close() {
	s.drain(time.Second)
	s.file.Close()
}

// tail returns the log's last n lines, across rotations.
func (s *sink) tail(n int) string {
	lines, _ := logfile.Tail(s.path, n)
	return string(bytes.TrimRight(bytes.Join(lines, nil), "\n"))
}
