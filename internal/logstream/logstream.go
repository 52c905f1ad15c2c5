// Package logstream owns streaming instance logs to a reader (`llamaboot
// logs`): the last lines of one instance's log or of every instance's
// ("[name] "-prefixed, interleaved line by line), then with follow every
// new line, across restarts and rotations, including instances started
// meanwhile, until the instance goes away. A reader too slow for a log is
// told how many lines it missed; the log never waits for it.
package logstream

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/llamaboot/llamaboot/internal/logfile"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

// Source is where the logs come from: the supervisor.
type Source interface {
	// Log is the instance's open log, or nil with its file's path when
	// none is open (it never started); supervise.ErrUnknownInstance for
	// a name not supervised.
	Log(name string) (*logfile.Log, string, error)
	Snapshots() []supervise.Snapshot
	Subscribe() (<-chan supervise.Event, func())
}

// followBuffer is how many lines a `logs -f` reader may fall behind before
// it misses lines (counted and said) rather than slow the log.
const followBuffer = 4096

// Stream is one reader's request, opened: its tails read, its followers
// (with follow) attached.
type Stream struct {
	src    Source
	name   string // "": every instance
	follow bool
	events <-chan supervise.Event
	cancel func()
	fw     *followers
	tails  []tail
}

type tail struct {
	name  string
	lines [][]byte
}

// Open reads the last tail lines of name's log (every instance's when name
// is ""), and with follow attaches to the logs so that no line written
// after the tail is missed. An unknown name is supervise.ErrUnknownInstance.
func Open(src Source, name string, n int, follow bool) (*Stream, error) {
	s := &Stream{src: src, name: name, follow: follow, cancel: func() {},
		fw: &followers{out: &lineWriter{prefixed: name == ""}, logs: map[string]*logfile.Log{}}}
	// Subscribed before anything is read: an instance started meanwhile
	// (by a reload, or with a log file that moved) is followed too.
	if follow {
		s.events, s.cancel = src.Subscribe()
	}
	names := []string{name}
	if name == "" {
		names = names[:0]
		for _, sn := range src.Snapshots() {
			names = append(names, sn.Spec.Name)
		}
	}
	for _, in := range names {
		l, path, err := src.Log(in)
		if err != nil {
			if name == "" {
				continue // removed meanwhile
			}
			s.Close()
			return nil, err
		}
		var lines [][]byte
		switch {
		case l == nil:
			lines, err = logfile.Tail(path, n)
		case follow:
			var f *logfile.Follower
			if lines, f, err = l.Follow(n, followBuffer); err == nil {
				s.fw.add(in, l, f)
			}
		default:
			lines, err = l.Tail(n)
		}
		if err != nil && name != "" {
			s.Close()
			return nil, fmt.Errorf("read the log of %s: %w", in, err)
		}
		s.tails = append(s.tails, tail{in, lines})
	}
	return s, nil
}

// Run writes the tails to w, then with follow every new line until ctx
// ends, the instance is removed (for one name) or the supervisor stops.
// w is flushed whenever the stream has caught up, when it can be.
func (s *Stream) Run(ctx context.Context, w io.Writer) {
	out := s.fw.out
	out.w = w
	out.f, _ = w.(interface{ Flush() })
	for _, t := range s.tails {
		for _, line := range t.lines {
			out.line(t.name, line)
		}
	}
	out.flush()
	if !s.follow {
		return
	}
	s.fw.run(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case ev, open := <-s.events:
			if !open {
				return // the supervisor has stopped
			}
			if s.name != "" && ev.Instance != s.name {
				continue
			}
			switch ev.Kind {
			case supervise.EvRemoved:
				if s.name != "" {
					return
				}
			case supervise.EvStarted:
				// A new instance, or one whose log file changed: follow
				// its log from its first line.
				l, _, err := s.src.Log(ev.Instance)
				if err != nil || l == nil || s.fw.logs[ev.Instance] == l {
					continue
				}
				if lines, f, err := l.FollowFromOpen(followBuffer); err == nil {
					for _, line := range lines {
						out.line(ev.Instance, line)
					}
					s.fw.add(ev.Instance, l, f)
					s.fw.run(ctx)
				}
			}
		}
	}
}

// Close ends every follower and waits for the copiers: nothing writes to
// the reader once it returns.
func (s *Stream) Close() {
	s.cancel()
	s.fw.stop()
}

// followers are the logs a `logs -f` request follows, and their copiers.
type followers struct {
	out     *lineWriter
	logs    map[string]*logfile.Log // followed, by instance
	pending []following             // added, not yet copying
	all     []*logfile.Follower
	wg      sync.WaitGroup
}

type following struct {
	name string
	f    *logfile.Follower
}

func (fw *followers) add(name string, l *logfile.Log, f *logfile.Follower) {
	fw.logs[name] = l
	fw.pending = append(fw.pending, following{name, f})
	fw.all = append(fw.all, f)
}

// run starts copying what was added.
func (fw *followers) run(ctx context.Context) {
	for _, p := range fw.pending {
		fw.wg.Add(1)
		go func() {
			defer fw.wg.Done()
			fw.out.follow(ctx, p.name, p.f)
		}()
	}
	fw.pending = nil
}

// stop ends every follower and waits for the copiers: nothing writes to
// the response once the handler has returned.
func (fw *followers) stop() {
	for _, f := range fw.all {
		f.Stop()
	}
	fw.wg.Wait()
}

// lineWriter streams log lines to a `logs` reader, one whole line at a
// time, "[name] "-prefixed when several instances interleave.
type lineWriter struct {
	mu       sync.Mutex
	w        io.Writer
	f        interface{ Flush() }
	prefixed bool
}

func (o *lineWriter) line(name string, line []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.write(name, line)
}

func (o *lineWriter) write(name string, line []byte) {
	if o.prefixed {
		io.WriteString(o.w, "["+name+"] ")
	}
	o.w.Write(line)
	if len(line) == 0 || line[len(line)-1] != '\n' {
		io.WriteString(o.w, "\n")
	}
}

func (o *lineWriter) flush() {
	if o.f != nil {
		o.f.Flush()
	}
}

// follow copies f's lines until its log closes or the reader leaves,
// flushing whenever it has caught up.
func (o *lineWriter) follow(ctx context.Context, name string, f *logfile.Follower) {
	for {
		select {
		case <-ctx.Done():
			f.Stop()
			return
		case line, ok := <-f.C:
			if !ok {
				return
			}
			o.mu.Lock()
			if n := f.Missed(); n > 0 {
				o.write(name, fmt.Appendf(nil, "[llamaboot] %d lines of %s not shown here: this reader fell behind (they are in the log file)\n", n, name))
			}
			o.write(name, line)
			if len(f.C) == 0 {
				o.flush()
			}
			o.mu.Unlock()
		}
	}
}
