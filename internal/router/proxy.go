package router

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/llamaboot/llamaboot/internal/printer"
)

// proxy forwards requests to instances: one httputil.ReverseProxy per
// target (made on its first request), all over one transport.
type proxy struct {
	tr  http.RoundTripper
	p   *printer.Printer
	log *log.Logger // ReverseProxy's own lines, through p
}

func newProxy(p *printer.Printer) *proxy {
	return &proxy{tr: newTransport(), p: p, log: errorLog(p)}
}

// errorLog routes what net/http logs by itself (a ReverseProxy's or an
// http.Server's ErrorLog; the standard logger by default, with no prefix)
// through the printer, as a warning of the router.
func errorLog(p *printer.Printer) *log.Logger {
	return log.New(printerWriter{p}, "", 0)
}

type printerWriter struct{ p *printer.Printer }

func (w printerWriter) Write(b []byte) (int, error) {
	w.p.Warnf("router: %s", strings.TrimSpace(string(b)))
	return len(b), nil
}

// cut is an upstream answer's body that says once, in plain words, why
// it ended early: the client went away (its request's context ended), or
// the instance stopped answering. It hands ReverseProxy context.Canceled
// in place of the error, which ReverseProxy does not log itself; the
// answer is cut short all the same.
type cut struct {
	io.ReadCloser
	ctx  context.Context
	name string
	p    *printer.Printer
	said bool
}

func (c *cut) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	if err == nil || err == io.EOF {
		return n, err
	}
	if !c.said {
		c.said = true
		if c.ctx.Err() != nil {
			c.p.Stepf("router: a client of %s went away before its answer ended; the request to %s was cancelled", c.name, c.name)
		} else {
			c.p.Warnf("router: %s stopped answering mid-answer (%v); the client's answer was cut short", c.name, err)
		}
	}
	return n, context.Canceled
}

// reverseProxy is t's ReverseProxy: the target is known to its Rewrite
// and ErrorHandler, so a request carries nothing more to find it.
func (p *proxy) reverseProxy(t *Target) *httputil.ReverseProxy {
	t.once.Do(func() {
		u, err := url.Parse(t.URL)
		if err == nil && (u.Scheme != "http" || u.Host == "") {
			err = errors.New("not http://HOST:PORT")
		}
		if err != nil {
			t.rp = &httputil.ReverseProxy{
				Rewrite: func(*httputil.ProxyRequest) {},
				Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
					return nil, errors.New("its URL " + t.URL + " is not usable: " + err.Error())
				}),
				ErrorHandler: func(w http.ResponseWriter, _ *http.Request, rerr error) {
					writeError(w, http.StatusInternalServerError, "internal_error", "instance "+t.Name+" cannot be reached: "+rerr.Error())
				},
				ErrorLog: p.log,
			}
			return
		}
		scheme, host := u.Scheme, u.Host
		auth := ""
		if t.APIKey != "" {
			auth = "Bearer " + t.APIKey
		}
		t.rp = &httputil.ReverseProxy{
			Transport: p.tr,
			// FlushInterval stays 0: ReverseProxy flushes every write of
			// a stream (text/event-stream, or a body of unknown length)
			// by itself. -1 for every answer would also cost each one a
			// timer, a goroutine and a flush of its headers alone.
			BufferPool: buffers{},
			ErrorLog:   p.log,
			ModifyResponse: func(res *http.Response) error {
				if res.StatusCode != http.StatusSwitchingProtocols { // ReverseProxy writes to an upgraded body
					res.Body = &cut{ReadCloser: res.Body, ctx: res.Request.Context(), name: t.Name, p: p.p}
				}
				return nil
			},
			Rewrite: func(pr *httputil.ProxyRequest) {
				// Out is a copy of In (URL included): path and query stay.
				pr.Out.URL.Scheme, pr.Out.URL.Host = scheme, host
				pr.Out.Host = host
				pr.Out.Header.Del("Expect") // the body is read already: no 100-continue to wait for
				if pr.In.GetBody != nil {
					// The body read to find the model, as the in-memory
					// reader it is: net/http sends headers and such a body
					// in one write, but flushes the headers alone before a
					// body it cannot see into (ReverseProxy's wrapper),
					// which cost a second write, and a second read
					// upstream, per request.
					if b, err := pr.In.GetBody(); err == nil {
						pr.Out.Body = b
					}
				}
				if t.stripKeys {
					// The client's key is the router's, not the server's.
					pr.Out.Header.Del("Authorization")
					pr.Out.Header.Del("x-api-key")
				}
				if auth != "" {
					pr.Out.Header.Set("Authorization", auth)
				}
			},
			ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
				if errors.Is(err, context.Canceled) || req.Context().Err() != nil {
					return // the client went away; the upstream request was cancelled with it
				}
				writeError(w, http.StatusBadGateway, "upstream_error", "instance "+t.Name+" did not answer: "+err.Error())
			},
		}
	})
	return t.rp
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// serve proxies req to t; path, when not "", replaces the request's path
// (/upstream/NAME/REST goes to /REST).
func (p *proxy) serve(w http.ResponseWriter, req *http.Request, t *Target, path string) {
	if path != "" {
		r2 := *req
		u := *req.URL
		u.Path, u.RawPath = path, ""
		r2.URL = &u
		req = &r2
	}
	p.reverseProxy(t).ServeHTTP(w, req)
}

// recorder notes the status and the time to the first byte of an answer.
type recorder struct {
	http.ResponseWriter
	began  time.Time
	m      *series // nil: no metrics
	status int
}

func (rc *recorder) WriteHeader(code int) {
	if rc.status == 0 {
		rc.status = code
		rc.m.firstByte(time.Since(rc.began))
	}
	rc.ResponseWriter.WriteHeader(code)
}

func (rc *recorder) Write(b []byte) (int, error) {
	if rc.status == 0 {
		rc.WriteHeader(http.StatusOK)
	}
	return rc.ResponseWriter.Write(b)
}

// Flush passes each streamed event on at once.
func (rc *recorder) Flush() {
	if f, ok := rc.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (rc *recorder) Unwrap() http.ResponseWriter { return rc.ResponseWriter }

func (rc *recorder) code() int {
	if rc.status == 0 {
		return 499 // nothing was written: the client went away first
	}
	return rc.status
}

// buffers reuses the proxy's copy buffers: one per request would be 32
// KiB of garbage each. Pooled as array pointers, so that putting one back
// allocates nothing.
type buffers struct{}

const copyBufferSize = 32 << 10

var bufPool = sync.Pool{New: func() any { return new([copyBufferSize]byte) }}

func (buffers) Get() []byte { return bufPool.Get().(*[copyBufferSize]byte)[:] }
func (buffers) Put(b []byte) {
	if cap(b) == copyBufferSize {
		bufPool.Put((*[copyBufferSize]byte)(b[:copyBufferSize]))
	}
}

// replay is a request body read already (to find its model), given to
// the transport as often as it asks (a retry on a fresh connection).
// (io.NopCloser over a *bytes.Reader, which net/http knows is in memory:
// it sends such a body with its headers in one write.)
type replay []byte

func (r replay) getBody() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(r)), nil }
