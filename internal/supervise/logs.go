package supervise

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"

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

// followBuffer is how many lines a `logs -f` reader may fall behind before
// it misses lines (counted and said) rather than slow the log.
const followBuffer = 4096

func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	var req LogsRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Tail < 0 {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("tail must be 0 or more lines, not %d", req.Tail))
		return
	}
	if req.Name != "" && !validName().MatchString(req.Name) {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("invalid instance name %q: names are letters, digits, '.', '_' and '-'", req.Name))
		return
	}
	// Subscribed before anything is read: an instance started meanwhile
	// (by a reload, or with a log file that moved) is followed too.
	var events <-chan Event
	if req.Follow {
		ev, cancel := s.Sup.Subscribe()
		defer cancel()
		events = ev
	}
	names := []string{req.Name}
	if req.Name == "" {
		names = names[:0]
		for _, sn := range s.Sup.Snapshots() {
			names = append(names, sn.Spec.Name)
		}
	}
	fw := &followers{out: &lineWriter{w: w, prefixed: req.Name == ""}, logs: map[string]*logfile.Log{}}
	fw.out.f, _ = w.(http.Flusher)
	defer fw.stop()
	type tail struct {
		name  string
		lines [][]byte
	}
	var tails []tail
	for _, name := range names {
		l, path, err := s.Sup.Log(name)
		if err != nil {
			if req.Name == "" {
				continue // removed meanwhile
			}
			s.controlError(w, name, err)
			return
		}
		var lines [][]byte
		switch {
		case l == nil:
			lines, err = logfile.Tail(path, req.Tail)
		case req.Follow:
			var f *logfile.Follower
			if lines, f, err = l.Follow(req.Tail, followBuffer); err == nil {
				fw.add(name, l, f)
			}
		default:
			lines, err = l.Tail(req.Tail)
		}
		if err != nil && req.Name != "" {
			writeError(w, http.StatusInternalServerError, "internal", fmt.Sprintf("read the log of %s: %v", name, err))
			return
		}
		tails = append(tails, tail{name, lines})
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	for _, t := range tails {
		for _, line := range t.lines {
			fw.out.line(t.name, line)
		}
	}
	fw.out.flush()
	if !req.Follow {
		return
	}
	fw.run(r.Context())
	for {
		select {
		case <-r.Context().Done():
			return
		case ev, open := <-events:
			if !open {
				return // the supervisor has stopped
			}
			if req.Name != "" && ev.Instance != req.Name {
				continue
			}
			switch ev.Kind {
			case EvRemoved:
				if req.Name != "" {
					return
				}
			case EvStarted:
				// A new instance, or one whose log file changed: follow
				// its log from its first line.
				l, _, err := s.Sup.Log(ev.Instance)
				if err != nil || l == nil || fw.logs[ev.Instance] == l {
					continue
				}
				if lines, f, err := l.FollowFromOpen(followBuffer); err == nil {
					for _, line := range lines {
						fw.out.line(ev.Instance, line)
					}
					fw.add(ev.Instance, l, f)
					fw.run(r.Context())
				}
			}
		}
	}
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
	f        http.Flusher
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

// Logs writes the log lines the supervisor on sock sends for req to out;
// with req.Follow it returns when the instance (every instance, for no
// name) goes away or the supervisor stops.
func Logs(sock string, req LogsRequest, out io.Writer) error {
	b, _ := json.Marshal(req)
	c := client(sock)
	c.Timeout = 0 // a follow lasts as long as the reader wants
	resp, err := c.Post("http://llamaboot/logs", "application/json", bytes.NewReader(b))
	if err != nil {
		return dialError(sock, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readReply(resp, nil)
	}
	_, err = io.Copy(out, resp.Body)
	return err
}
