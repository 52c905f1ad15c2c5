package supervise

import (
	"fmt"
	"io"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/logfile"
)

// openLog returns the log spec says, with its rotation bounds: cur is kept
// (with its followers) when only the bounds changed, and replaced when the
// file did. The starter calls it, outside the owner: opening may block.
func (o *owner) openLog(spec config.Instance, cur *sink) (*sink, error) {
	if cur != nil && cur.path == spec.LogFile {
		cur.log.SetLimits(spec.LogMaxSize, spec.LogMaxFiles)
		return cur, nil
	}
	if cur != nil {
		// Its last process's output is in, or its flush deadline passed:
		// a copier still held open by a grandchild finds it closed.
		cur.log.Close()
	}
	// Said on entry's output when it starts and when it stops: the log
	// itself cannot say it while it is failing. Published from the
	// writer's goroutine, so it captures what it names.
	name, path, url, pub, clock := spec.Name, spec.LogFile, spec.URL, o.pub, o.d.Clock
	return openSink(spec, func(r logfile.LossReport) {
		pub(Event{Time: clock.Now(), Instance: name, Kind: EvLogLoss, URL: url, LogFile: path, Err: r})
	})
}

func (o *owner) setLog(l *logfile.Log) {
	o.mu.Lock()
	o.log = l
	o.mu.Unlock()
}

// currentLog is the instance's log for `logs`; nil before the first start
// or when it could not be opened.
func (o *owner) currentLog() *logfile.Log {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.log
}

// stdout is where this instance's lines are copied besides its log.
func (o *owner) stdout() io.Writer {
	if o.spec.LogToStdout {
		return o.d.Stdout
	}
	return nil
}

// Log returns the log of the instance called name, or nil with the path of
// its file when no log is open for it (it never started).
func (s *Supervisor) Log(name string) (*logfile.Log, string, error) {
	s.mu.Lock()
	m := s.owners[name]
	s.mu.Unlock()
	if m == nil || m.removing {
		return nil, "", fmt.Errorf("%w %q", ErrUnknownInstance, name)
	}
	return m.o.currentLog(), m.o.snapshot().Spec.LogFile, nil
}
