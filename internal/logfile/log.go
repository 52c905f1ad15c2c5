package logfile

import (
	"sync"
	"sync/atomic"
)

// Log is an instance's log as the supervisor keeps it across the
// instance's processes: a rotating Writer, and the followers of `logs -f`.
// Every write goes to the file and then to each follower under one lock,
// so Follow can cut the stream exactly: the last n lines, then every line
// after them, none twice and none missing (unless the follower falls
// behind, which is counted). Rotation is the Writer's business, so
// followers see no seam there.
type Log struct {
	w    *Writer
	path string

	mu        sync.Mutex
	writes    int // since the log was opened (a line each, as a Sink writes)
	followers map[*Follower]struct{}
	closed    bool

	droppedLines, droppedBytes atomic.Int64
}

// OpenLog opens path through NewWriter.
func OpenLog(path string, maxSize int64, maxFiles int) (*Log, error) {
	w, err := NewWriter(path, maxSize, maxFiles)
	if err != nil {
		return nil, err
	}
	return &Log{w: w, path: path, followers: map[*Follower]struct{}{}}, nil
}

// Path is the live file's path.
func (l *Log) Path() string { return l.path }

// Write appends p (one whole line, or more) and hands it to followers. It
// never fails: see Writer.Write. Writes after Close are dropped.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return len(p), nil
	}
	l.w.Write(p)
	l.writes++
	if len(l.followers) > 0 {
		line := append([]byte(nil), p...) // p is the caller's to reuse
		for f := range l.followers {
			select {
			case f.c <- line:
			default:
				f.missed.Add(1)
			}
		}
	}
	return len(p), nil
}

// Flush writes buffered output to the file.
func (l *Log) Flush() error { return l.w.Flush() }

// SetLimits changes the rotation bounds from the next write on.
func (l *Log) SetLimits(maxSize int64, maxFiles int) { l.w.SetLimits(maxSize, maxFiles) }

// Lost reports the output lost: to a full or unwritable disk, and lines
// a sink dropped because the disk could not keep up.
func (l *Log) Lost() Loss {
	lost := l.w.Lost()
	lost.Lines += l.droppedLines.Load()
	lost.Bytes += l.droppedBytes.Load()
	return lost
}

// Dropped counts lines a sink dropped before they reached the log.
func (l *Log) Dropped(lines, bytes int64) {
	l.droppedLines.Add(lines)
	l.droppedBytes.Add(bytes)
}

// OnLoss sets what hears when writing the log starts and stops losing
// output (see Writer.OnLoss).
func (l *Log) OnLoss(f func(LossReport)) { l.w.OnLoss(f) }

// Follow returns up to tail of the last lines (across rotated files) and a
// follower that receives every line written after them. A follower more
// than buf lines behind misses lines (see Follower.Missed) rather than
// slowing the log. After Close it returns the tail and a closed follower.
func (l *Log) Follow(tail, buf int) ([][]byte, *Follower, error) {
	return l.follow(func() int { return tail }, buf)
}

// follow is Follow with the tail's length read under the lock.
func (l *Log) follow(tail func() int, buf int) ([][]byte, *Follower, error) {
	f := &Follower{c: make(chan []byte, buf), l: l}
	f.C = f.c
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.Flush()
	lines, err := Tail(l.path, tail())
	if err != nil {
		return nil, nil, err
	}
	if l.closed {
		close(f.c)
	} else {
		l.followers[f] = struct{}{}
	}
	return lines, f, nil
}

// FollowFromOpen is Follow with every line written since the log was
// opened as the tail (as far back as the kept files go): for a reader
// that finds a log opened after it began.
func (l *Log) FollowFromOpen(buf int) ([][]byte, *Follower, error) {
	return l.follow(func() int { return l.writes }, buf)
}

// Tail returns up to n of the last lines, across rotated files, with
// everything written so far included.
func (l *Log) Tail(n int) ([][]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.Flush()
	return Tail(l.path, n)
}

// Close ends every follower and closes the file.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	for f := range l.followers {
		close(f.c)
	}
	l.followers = nil
	return l.w.Close()
}

// Follower receives a Log's lines on C, which is closed when the log is
// closed or Stop is called.
type Follower struct {
	C      <-chan []byte
	c      chan []byte
	l      *Log
	missed atomic.Int64
}

// Stop ends the follower; C is closed.
func (f *Follower) Stop() {
	f.l.mu.Lock()
	defer f.l.mu.Unlock()
	if _, ok := f.l.followers[f]; ok {
		delete(f.l.followers, f)
		close(f.c)
	}
}

// Missed returns how many lines the follower missed since the last call
// because it was too far behind.
func (f *Follower) Missed() int64 { return f.missed.Swap(0) }
