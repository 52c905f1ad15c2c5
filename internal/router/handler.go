package router

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Routed are the POST endpoints routed by their body's model field.
var Routed = []string{
	"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/rerank",
	"/v1/messages", "/completion", "/infill", "/tokenize", "/detokenize",
}

// Handler serves the router's endpoints.
func (r *Router) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, p := range Routed {
		mux.HandleFunc("POST "+p, r.routed)
	}
	mux.HandleFunc("GET /v1/models", r.models)
	mux.HandleFunc("GET /models", r.models)
	mux.HandleFunc("/upstream/{name}/{rest...}", r.upstream)
	mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		writeError(w, http.StatusNotFound, "not_found_error", fmt.Sprintf("no route for %s %s; the router serves POST %s, GET /v1/models and /upstream/NAME/...",
			req.Method, req.URL.Path, strings.Join(Routed, ", ")))
	})
	return r.authorized(mux)
}

// authorized refuses requests without one of the clients' keys, when keys
// are configured: Authorization: Bearer KEY, or x-api-key: KEY (the
// Anthropic form).
func (r *Router) authorized(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		t := r.table.Load()
		if t.KeyRequired() {
			key := req.Header.Get("x-api-key")
			if auth, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer "); ok {
				key = strings.TrimSpace(auth)
			}
			if key == "" || !t.Allowed(key) {
				r.o.Metrics.request("", http.StatusUnauthorized)
				w.Header().Set("WWW-Authenticate", `Bearer realm="llamaboot router"`)
				writeError(w, http.StatusUnauthorized, "authentication_error", "a valid API key is needed: Authorization: Bearer KEY (or x-api-key: KEY)")
				return
			}
		}
		next.ServeHTTP(w, req)
	})
}

// routed serves a POST routed by its body's model.
func (r *Router) routed(w http.ResponseWriter, req *http.Request) {
	began := time.Now()
	t := r.table.Load()
	body, pooled, err := r.readBody(w, req)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			r.fail(w, "", http.StatusRequestEntityTooLarge, "invalid_request_error", fmt.Sprintf("the request body is over %d bytes", tooBig.Limit))
			return
		}
		r.fail(w, "", http.StatusBadRequest, "invalid_request_error", "cannot read the request body: "+err.Error())
		return
	}
	model, err := modelOf(body)
	if err != nil {
		r.fail(w, "", http.StatusBadRequest, "invalid_request_error", "the request body is not a JSON object naming a model: "+err.Error())
		return
	}
	tg, label := r.resolve(t, model)
	if tg == nil {
		names := r.allNames(t)
		if model == "" {
			r.fail(w, "", http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("the request names no model; one of: %s", strings.Join(names, ", ")))
			return
		}
		r.fail(w, "", http.StatusNotFound, "model_not_found", fmt.Sprintf("model %q is not served here; models: %s", model, strings.Join(names, ", ")))
		return
	}
	rb := replay(body)
	req.Body, _ = rb.getBody()
	req.ContentLength = int64(len(body))
	req.GetBody = rb.getBody
	r.serve(w, req, tg, label, "", began)
	if pooled != nil {
		// The proxy is done with the body: the transport writes a
		// request whole before it returns the answer.
		bodyPool.Put(pooled)
	}
}

// pooledBody is the largest request body read into a reused buffer (a
// chat request with some history); larger ones are allocated.
const pooledBody = 64 << 10

var bodyPool = sync.Pool{New: func() any { return new([pooledBody]byte) }}

// readBody reads a request body whole, at most MaxBody bytes. A body
// whose length is given and fits is read into a pooled buffer, returned
// too: the caller puts it back when the request is done.
func (r *Router) readBody(w http.ResponseWriter, req *http.Request) ([]byte, *[pooledBody]byte, error) {
	if n := req.ContentLength; n > 0 && n <= pooledBody && n <= r.o.MaxBody {
		buf := bodyPool.Get().(*[pooledBody]byte)
		if _, err := io.ReadFull(req.Body, buf[:n]); err != nil {
			bodyPool.Put(buf)
			return nil, nil, err
		}
		return buf[:n], buf, nil
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, r.o.MaxBody))
	return body, nil, err
}

// resolve finds the instance a model name routes to, and the name to
// count it under: a configured name, or one a router-mode instance lists
// (asking them again when the name is new).
func (r *Router) resolve(t *Table, model string) (*Target, string) {
	if model == "" {
		if len(t.order) == 1 { // one instance: llama.cpp's own clients often send no model
			return t.targets[t.order[0]], t.order[0]
		}
		return nil, ""
	}
	if tg, ok := t.Target(model); ok {
		return tg, model
	}
	if inst, ok := r.remote.lookup(model); ok {
		if tg := t.targets[inst]; tg != nil {
			return tg, model
		}
	}
	if modes := t.routerModes(); len(modes) > 0 && r.remote.mayRefresh() {
		for _, tg := range modes {
			r.discover(tg)
		}
		if inst, ok := r.remote.lookup(model); ok {
			if tg := t.targets[inst]; tg != nil {
				return tg, model
			}
		}
	}
	return nil, ""
}

// upstream passes /upstream/NAME/REST through to one instance.
func (r *Router) upstream(w http.ResponseWriter, req *http.Request) {
	began := time.Now()
	t := r.table.Load()
	name := req.PathValue("name")
	tg, ok := t.Target(name)
	if !ok {
		r.fail(w, "", http.StatusNotFound, "model_not_found", fmt.Sprintf("no instance %q; instances: %s", name, strings.Join(t.order, ", ")))
		return
	}
	r.serve(w, req, tg, name, "/"+req.PathValue("rest"), began)
}

// serve waits for a verdict and proxies the request.
func (r *Router) serve(w http.ResponseWriter, req *http.Request, tg *Target, label, path string, began time.Time) {
	v := r.acquire(req.Context(), tg.Name)
	if !v.serve {
		if v.code == 499 {
			r.o.Metrics.request(label, 499)
			return // the client went away; nobody reads an answer
		}
		if v.retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(v.retryAfter))
		}
		r.fail(w, label, v.code, v.errType, v.msg)
		return
	}
	defer r.release(tg.Name)
	rec := &recorder{ResponseWriter: w, began: began, m: r.o.Metrics.of(label)}
	r.proxy.serve(rec, req, v.target, path)
	rec.m.done(r.o.Metrics, label, rec.code(), time.Since(began))
}

func (r *Router) fail(w http.ResponseWriter, label string, code int, errType, msg string) {
	r.o.Metrics.request(label, code)
	writeError(w, code, errType, msg)
}

// writeError answers in the OpenAI error shape.
func writeError(w http.ResponseWriter, code int, errType, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": errType, "code": code}})
}

// model is one entry of GET /v1/models.
type model struct {
	ID       string `json:"id"`
	Object   string `json:"object"`
	Created  int64  `json:"created"`
	OwnedBy  string `json:"owned_by"`
	Instance string `json:"instance"`
	State    string `json:"state"`
}

// models lists every routable name with its instance's state.
func (r *Router) models(w http.ResponseWriter, req *http.Request) {
	now := time.Now().Unix()
	data := []model{}
	for _, st := range r.Status() {
		for _, n := range st.Names {
			data = append(data, model{ID: n, Object: "model", Created: now, OwnedBy: "llamaboot", Instance: st.Instance, State: st.State})
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": data})
}

// allNames are the configured names and those router-mode instances list.
func (r *Router) allNames(t *Table) []string {
	names := t.Names()
	for _, tg := range t.routerModes() {
		names = append(names, r.remote.of(tg.Name)...)
	}
	return names
}
