package router

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// transport is an HTTP/1.1 client for instances on this machine that
// does each exchange on the caller's goroutine: write the request, read
// the answer, hand the connection back to the pool when the body is read
// to its end. net/http's Transport passes every request and answer
// through two more goroutines per connection; on a loaded machine those
// hand-offs cost more than the proxying itself. Plain HTTP only, no
// environment proxy, no redirects (ReverseProxy follows none).
type transport struct {
	dialer  net.Dialer
	maxIdle int // idle connections kept per host
	// wrap, when set, wraps each new connection (tests count its writes).
	wrap func(net.Conn) net.Conn

	mu   sync.Mutex
	idle map[string][]*pconn
}

func newTransport() *transport {
	return &transport{dialer: net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}, maxIdle: 256, idle: map[string][]*pconn{}}
}

// pconn is one kept-alive connection to an instance.
type pconn struct {
	c    net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	host string
	used time.Time
}

// idleTimeout drops pooled connections unused this long (llama-server
// closes its side after its own keep-alive timeout).
const poolIdleTimeout = 30 * time.Second

func (t *transport) get(host string) *pconn {
	t.mu.Lock()
	defer t.mu.Unlock()
	list := t.idle[host]
	for len(list) > 0 {
		pc := list[len(list)-1]
		list = list[:len(list)-1]
		if time.Since(pc.used) < poolIdleTimeout {
			t.idle[host] = list
			return pc
		}
		pc.c.Close()
	}
	t.idle[host] = list
	return nil
}

func (t *transport) dropIdle(host string) {
	t.mu.Lock()
	list := t.idle[host]
	delete(t.idle, host)
	t.mu.Unlock()
	for _, pc := range list {
		pc.c.Close()
	}
}

func (t *transport) put(pc *pconn) {
	pc.used = time.Now()
	t.mu.Lock()
	if len(t.idle[pc.host]) < t.maxIdle {
		t.idle[pc.host] = append(t.idle[pc.host], pc)
		pc = nil
	}
	t.mu.Unlock()
	if pc != nil {
		pc.c.Close()
	}
}

func (t *transport) dial(ctx context.Context, host string) (*pconn, error) {
	c, err := t.dialer.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	if t.wrap != nil {
		c = t.wrap(c)
	}
	return &pconn{c: c, br: bufio.NewReaderSize(c, 16<<10), bw: bufio.NewWriterSize(c, 16<<10), host: host}, nil
}

// RoundTrip sends req on a pooled connection (retried once on a fresh one
// when a kept-alive connection turns out closed before any answer) and
// returns the answer; its body gives the connection back at its end.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" {
		return nil, errors.New("router transport: only http:// instances")
	}
	host := req.URL.Host
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		var pc *pconn
		reused := attempt == 0 // a retry dials afresh
		if reused {
			pc = t.get(host)
		}
		if pc == nil {
			var err error
			if pc, err = t.dial(ctx, host); err != nil {
				return nil, err
			}
			reused = false
		}
		resp, err := t.exchange(ctx, pc, req)
		if err == nil {
			return resp, nil
		}
		// A kept-alive connection the server had closed: try once more on
		// a new one, when the body can be sent again.
		if !reused || attempt > 0 || ctx.Err() != nil || (req.Body != nil && req.Body != http.NoBody && req.GetBody == nil) {
			return nil, err
		}
		t.dropIdle(host) // its neighbours in the pool are likely closed too (a restarted server)
		if req.GetBody != nil {
			body, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			req.Body = body
		}
	}
}

// exchange writes req and reads the answer's head on pc. A cancelled
// context ends the exchange (and the connection) at once.
func (t *transport) exchange(ctx context.Context, pc *pconn, req *http.Request) (*http.Response, error) {
	stop := context.AfterFunc(ctx, func() { pc.c.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, error) {
		stop()
		pc.c.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if err := req.Write(pc.bw); err != nil {
		return fail(err)
	}
	if err := pc.bw.Flush(); err != nil {
		return fail(err)
	}
	resp, err := http.ReadResponse(pc.br, req)
	if err != nil {
		return fail(err)
	}
	keep := !resp.Close && !req.Close
	if resp.Body == http.NoBody || resp.Body == nil {
		if stop() && keep {
			t.put(pc)
		} else {
			pc.c.Close()
		}
		return resp, nil
	}
	resp.Body = &body{rc: resp.Body, pc: pc, t: t, stop: stop, keep: keep}
	return resp, nil
}

// body hands its connection back once read to the end and closed; closed
// early (or after an error, or a cancel) it closes the connection.
type body struct {
	rc   io.ReadCloser
	pc   *pconn
	t    *transport
	stop func() bool
	keep bool
	eof  bool
	once sync.Once
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	} else if err != nil {
		b.keep = false
	}
	return n, err
}

func (b *body) Close() error {
	b.once.Do(func() {
		if !b.eof || !b.keep {
			// Closing the body first would read the rest of it, which a
			// stream may never end: drop the connection instead (the
			// server sees its client go).
			b.pc.c.Close()
			b.rc.Close()
			b.stop()
			return
		}
		b.rc.Close()
		if b.stop() {
			b.t.put(b.pc)
			return
		}
		b.pc.c.Close()
	})
	return nil
}
