package router

import (
	"context"
	"errors"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"
)

// proxy forwards a request to the instance its verdict named.
type proxy struct {
	r  *Router
	rp *httputil.ReverseProxy
}

type targetKey struct{}

type routeTo struct {
	t    *Target
	path string
	u    *url.URL
}

func newProxy(r *Router) *proxy {
	p := &proxy{r: r}
	p.rp = &httputil.ReverseProxy{
		Transport:     newTransport(),
		FlushInterval: -1, // streamed answers (SSE) reach the client event by event
		BufferPool:    buffers{},
		Rewrite: func(pr *httputil.ProxyRequest) {
			to := pr.In.Context().Value(targetKey{}).(routeTo)
			pr.SetURL(to.u)
			pr.Out.URL.Path, pr.Out.URL.RawPath = to.path, ""
			pr.Out.Host = to.u.Host
			pr.Out.Header.Del("Expect") // the body is read already: no 100-continue to wait for
			if p.r.table.Load().KeyRequired() {
				// The client's key is the router's, not the server's.
				pr.Out.Header.Del("Authorization")
				pr.Out.Header.Del("x-api-key")
			}
			if to.t.APIKey != "" {
				pr.Out.Header.Set("Authorization", "Bearer "+to.t.APIKey)
			}
		},
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			if errors.Is(err, context.Canceled) || req.Context().Err() != nil {
				return // the client went away; the upstream request was cancelled with it
			}
			to := req.Context().Value(targetKey{}).(routeTo)
			writeError(w, http.StatusBadGateway, "upstream_error", "instance "+to.t.Name+" did not answer: "+err.Error())
		},
	}
	return p
}

func (p *proxy) serve(w http.ResponseWriter, req *http.Request, t *Target, path string) {
	u, err := url.Parse(t.URL)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal_error", "instance "+t.Name+" has no usable URL: "+err.Error())
		return
	}
	ctx := context.WithValue(req.Context(), targetKey{}, routeTo{t: t, path: path, u: u})
	p.rp.ServeHTTP(w, req.WithContext(ctx))
}

// recorder notes the status and the time to the first byte of an answer.
type recorder struct {
	http.ResponseWriter
	began  time.Time
	m      *Metrics
	label  string
	status int
}

func (rc *recorder) WriteHeader(code int) {
	if rc.status == 0 {
		rc.status = code
		rc.m.firstByte(rc.label, time.Since(rc.began))
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
// KiB of garbage each.
type buffers struct{}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (buffers) Get() []byte  { return *bufPool.Get().(*[]byte) }
func (buffers) Put(b []byte) { bufPool.Put(&b) }
