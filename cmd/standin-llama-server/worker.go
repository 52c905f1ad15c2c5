package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// worker plays llama-server's worker loop: one slot that a completion keeps
// busy, token counters, and the endpoints that need the loop to answer
// (/slots, /props, /metrics) — which stop answering when the loop wedges.
type worker struct {
	hangFile  string        // the loop wedges once this file exists; "" never
	hangAfter int64         // answers before the loop wedges; <0 never
	hangLog   time.Duration // progress lines while wedged; 0 none
	gen       time.Duration // how long a completion keeps the slot
	name      string        // its alias: which server answered

	answered  atomic.Int64
	busy      atomic.Bool
	predicted atomic.Int64
	prompt    atomic.Int64
	hangOnce  sync.Once
}

func newWorker(hangFile string, hangAfter int, hangLog, gen time.Duration) *worker {
	return &worker{hangFile: hangFile, hangAfter: int64(hangAfter), hangLog: hangLog, gen: gen}
}

func (w *worker) wedged() bool {
	if w.hangFile != "" {
		if _, err := os.Stat(w.hangFile); err == nil {
			return true
		}
	}
	return w.hangAfter >= 0 && w.answered.Add(1) > w.hangAfter
}

// serve answers through the worker loop, or never once it is wedged.
func (w *worker) serve(rw http.ResponseWriter, r *http.Request, answer func(http.ResponseWriter)) {
	if w.wedged() {
		w.hangOnce.Do(func() {
			fmt.Println("standin-llama-server: worker loop wedged (on purpose)")
			if w.hangLog > 0 {
				go func() {
					for i := 0; ; i++ {
						time.Sleep(w.hangLog)
						fmt.Printf("standin-llama-server: still processing a long prompt (%d)\n", i)
					}
				}()
			}
		})
		<-r.Context().Done() // the client gives up; we never answer
		return
	}
	answer(rw)
}

func (w *worker) slots(rw http.ResponseWriter) {
	rw.Header().Set("Content-Type", "application/json")
	json.NewEncoder(rw).Encode([]map[string]any{{"id": 0, "n_ctx": 4096, "is_processing": w.busy.Load()}})
}

func (w *worker) props(rw http.ResponseWriter) {
	rw.Header().Set("Content-Type", "application/json")
	json.NewEncoder(rw).Encode(map[string]any{"total_slots": 1, "model_path": "standin", "build_info": "standin"})
}

func (w *worker) metrics(rw http.ResponseWriter) {
	rw.Header().Set("Content-Type", "text/plain; version=0.0.4")
	busy := 0
	if w.busy.Load() {
		busy = 1
	}
	fmt.Fprintf(rw, "# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.\n# TYPE llamacpp:prompt_tokens_total counter\nllamacpp:prompt_tokens_total %d\n", w.prompt.Load())
	fmt.Fprintf(rw, "# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.\n# TYPE llamacpp:tokens_predicted_total counter\nllamacpp:tokens_predicted_total %d\n", w.predicted.Load())
	fmt.Fprintf(rw, "# HELP llamacpp:requests_processing Number of requests processing.\n# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing %d\n", busy)
}

// request is what the stand-in reads of a request body.
type request struct {
	Model  string `json:"model"`
	Stream bool   `json:"stream"`
}

// complete keeps the one slot busy for w.gen, predicting a token every 10
// ms; with "stream": true each token is a server-sent event, sent as it is
// made. A client that goes away cancels it, as llama-server logs.
func (w *worker) complete(rw http.ResponseWriter, r *http.Request) {
	var req request
	_ = json.NewDecoder(r.Body).Decode(&req)
	if !w.busy.CompareAndSwap(false, true) {
		rw.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(rw, `{"error":{"code":503,"message":"no free slot","type":"unavailable_error"}}`)
		return
	}
	defer w.busy.Store(false)
	fmt.Println("standin-llama-server: slot 0 processing a request")
	w.prompt.Add(16)
	if req.Stream {
		rw.Header().Set("Content-Type", "text/event-stream")
		rw.WriteHeader(http.StatusOK)
	}
	deadline := time.Now().Add(w.gen)
	for n := 0; time.Now().Before(deadline); n++ {
		select {
		case <-r.Context().Done():
			fmt.Println("standin-llama-server: request cancelled by the client")
			return
		case <-time.After(10 * time.Millisecond):
		}
		w.predicted.Add(1)
		if req.Stream {
			fmt.Fprintf(rw, "data: {\"content\":\"tok%d\",\"model\":%q,\"at_ms\":%d}\n\n", n, req.Model, time.Now().UnixMilli())
			rw.(http.Flusher).Flush()
		}
	}
	fmt.Println("standin-llama-server: slot 0 released")
	if req.Stream {
		fmt.Fprint(rw, "data: [DONE]\n\n")
		return
	}
	rw.Header().Set("Content-Type", "application/json")
	json.NewEncoder(rw).Encode(map[string]any{"content": "stand-in answer", "stop": true, "model": req.Model, "served_by": w.name})
}

// echo answers the other endpoints with what it was asked: the path, the
// model, and which server answered.
func (w *worker) echo(rw http.ResponseWriter, r *http.Request) {
	var req request
	_ = json.NewDecoder(r.Body).Decode(&req)
	rw.Header().Set("Content-Type", "application/json")
	json.NewEncoder(rw).Encode(map[string]any{"path": r.URL.Path, "model": req.Model, "served_by": w.name})
}
