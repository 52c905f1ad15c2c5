package logfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// MaxLine is the longest line a sink passes on whole; longer output is cut
// into pieces of this size so memory stays bounded whatever the server
// prints.
const MaxLine = 64 << 10

// DefaultQueue bounds the bytes a sink holds between reading a server's
// pipe and writing them out: a stalled disk or terminal costs lines (counted),
// never a blocked server.
const DefaultQueue = 4 << 20

// Sink copies one server's output, line by line, from the read end of its
// pipe to a log file (a Log, which also feeds followers) and to an optional
// shared stdout with a "[name] " prefix. The reading side never waits for the writing side: it
// queues lines (up to DefaultQueue bytes) and the writing side takes them in
// batches; lines beyond the bound are dropped, counted, and the count is
// written into the log.
type Sink struct {
	name   string
	file   io.Writer // nil: no file
	stdout io.Writer // nil: not copied to stdout

	qmu      sync.Mutex
	qcond    *sync.Cond
	queue    [][]byte
	queued   int // bytes in queue
	maxQueue int
	eof      bool
	dropped  atomic.Int64
	dropB    atomic.Int64 // bytes of the dropped lines

	done chan struct{}
}

// Flusher is a file writer that buffers; the sink flushes it after each
// batch so a batch costs one write.
type Flusher interface{ Flush() error }

// NewSink makes a sink for the instance name. file and stdout may be nil;
// stdout should be shared by all sinks through Locked so lines of different
// instances do not interleave mid-line.
func NewSink(name string, file, stdout io.Writer) *Sink {
	s := &Sink{
		name: name, file: file, stdout: stdout,
		maxQueue: DefaultQueue,
		done:     make(chan struct{}),
	}
	s.qcond = sync.NewCond(&s.qmu)
	return s
}

// Run copies r until EOF (the server and everything it started closed the
// pipe), then flushes what is queued and returns. Call it once.
func (s *Sink) Run(r io.Reader) {
	go s.write()
	br := bufio.NewReaderSize(r, MaxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			s.enqueue(bytes.Clone(line))
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			break
		}
	}
	s.qmu.Lock()
	s.eof = true
	s.qcond.Signal()
	s.qmu.Unlock()
	<-s.done
}

func (s *Sink) enqueue(line []byte) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.queued+len(line) > s.maxQueue {
		s.dropped.Add(1)
		s.dropB.Add(int64(len(line)))
		return
	}
	s.queue = append(s.queue, line)
	s.queued += len(line)
	s.qcond.Signal()
}

// next waits for queued lines and takes them all; nil means the pipe ended
// and everything was taken.
func (s *Sink) next() [][]byte {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	for len(s.queue) == 0 && !s.eof {
		s.qcond.Wait()
	}
	batch := s.queue
	s.queue, s.queued = nil, 0
	return batch
}

// write drains the queue: file first, then stdout.
func (s *Sink) write() {
	defer close(s.done)
	var prefix []byte
	if s.stdout != nil {
		prefix = []byte("[" + s.name + "] ")
	}
	var reported, reportedB int64
	for {
		batch := s.next()
		if batch == nil {
			return
		}
		if d, b := s.dropped.Load(), s.dropB.Load(); d > reported && s.file != nil {
			fmt.Fprintf(s.file, "[llamaboot] %d lines (%d bytes) of %s's output were dropped: it wrote faster than they could be stored\n", d-reported, b-reportedB, s.name)
			if c, ok := s.file.(interface{ Dropped(lines, bytes int64) }); ok {
				c.Dropped(d-reported, b-reportedB)
			}
			reported, reportedB = d, b
		}
		for _, line := range batch {
			if s.file != nil {
				s.file.Write(line)
			}
			if s.stdout != nil {
				out := make([]byte, 0, len(prefix)+len(line)+1)
				out = append(append(out, prefix...), line...)
				if out[len(out)-1] != '\n' {
					out = append(out, '\n')
				}
				s.stdout.Write(out)
			}
		}
		if f, ok := s.file.(Flusher); ok {
			f.Flush()
		}
	}
}

// Dropped reports how many lines were dropped because the queue was full.
func (s *Sink) Dropped() int64 { return s.dropped.Load() }

// Locked serialises writes to w, one call per line, for a stdout shared by
// several sinks.
func Locked(w io.Writer) io.Writer { return &locked{w: w} }

type locked struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *locked) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
