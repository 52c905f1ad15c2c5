package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// worker plays llama-server's slot loop, which runs on the process's main
// thread (main locks it there): the endpoints that need the loop (/slots,
// /props, /metrics, completions) post a task to it and wait, while /health
// and /models answer from the HTTP goroutines. As with the real server:
//   - a wedged loop answers nothing and burns no CPU, and every request
//     its client abandons is logged "stop: cancel task, id_task = N";
//   - a long prompt keeps the loop (and a core) busy in one piece, so
//     /slots is silent meanwhile;
//   - generation steps every 10 ms, answering other tasks in between.
type worker struct {
	hangFile  string        // the loop wedges once this file exists; "" never
	hangAfter int64         // answers before the loop wedges; <0 never
	hangLog   time.Duration // progress lines while wedged; 0 none
	gen       time.Duration // how long a completion generates
	perChar   time.Duration // prompt processing time per prompt byte (CPU burnt)
	name      string        // its alias: which server answered

	tasks     chan func()
	nextID    atomic.Int64
	answered  atomic.Int64
	busy      atomic.Int64 // requests in flight
	predicted atomic.Int64
	prompt    atomic.Int64
	hangOnce  sync.Once
}

func newWorker(hangFile string, hangAfter int, hangLog, gen, perChar time.Duration) *worker {
	return &worker{hangFile: hangFile, hangAfter: int64(hangAfter), hangLog: hangLog, gen: gen, perChar: perChar,
		tasks: make(chan func(), 64)}
}

// loop runs the tasks, on the main thread, until the process ends.
func (w *worker) loop() {
	for task := range w.tasks {
		if w.wedged() {
			w.hangOnce.Do(w.sayWedged)
			select {} // stuck: no task runs again, no CPU is used
		}
		task()
	}
}

func (w *worker) sayWedged() {
	fmt.Println("standin-llama-server: worker loop wedged (on purpose)")
	if w.hangLog > 0 {
		go func() {
			for i := 0; ; i++ {
				time.Sleep(w.hangLog)
				fmt.Printf("I slot update_slots: id  0 | task 0 | prompt processing progress (%d)\n", i)
			}
		}()
	}
}

func (w *worker) wedged() bool {
	if w.hangFile != "" {
		if _, err := os.Stat(w.hangFile); err == nil {
			return true
		}
	}
	return w.hangAfter >= 0 && w.answered.Load() >= w.hangAfter
}

// post runs task on the loop and waits for it, or for the client to give
// up: then, like llama-server, it logs the cancelled task.
func (w *worker) post(r *http.Request, task func()) bool {
	id := w.nextID.Add(1) - 1
	done := make(chan struct{})
	select {
	case w.tasks <- func() { task(); close(done) }:
	case <-r.Context().Done():
		fmt.Printf("W srv          stop: cancel task, id_task = %d\n", id)
		return false
	}
	select {
	case <-done:
		return true
	case <-r.Context().Done():
		fmt.Printf("W srv          stop: cancel task, id_task = %d\n", id)
		return false
	}
}

// serve answers through the loop.
func (w *worker) serve(rw http.ResponseWriter, r *http.Request, answer func() any) {
	var body any
	if !w.post(r, func() { body = answer(); w.answered.Add(1) }) {
		return
	}
	if s, ok := body.(string); ok {
		rw.Header().Set("Content-Type", "text/plain; version=0.0.4")
		io.WriteString(rw, s)
		return
	}
	rw.Header().Set("Content-Type", "application/json")
	json.NewEncoder(rw).Encode(body)
}

func (w *worker) slots() any {
	return []map[string]any{{"id": 0, "n_ctx": 4096, "is_processing": w.busy.Load() > 0}}
}

func (w *worker) props() any {
	return map[string]any{"total_slots": 1, "model_path": "standin", "build_info": "standin"}
}

func (w *worker) metrics() any {
	return fmt.Sprintf("# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.\n# TYPE llamacpp:prompt_tokens_total counter\nllamacpp:prompt_tokens_total %d\n", w.prompt.Load()) +
		fmt.Sprintf("# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.\n# TYPE llamacpp:tokens_predicted_total counter\nllamacpp:tokens_predicted_total %d\n", w.predicted.Load()) +
		fmt.Sprintf("# HELP llamacpp:requests_processing Number of requests processing.\n# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing %d\n", w.busy.Load())
}

// request is what the stand-in reads of a request body.
type request struct {
	Model  string `json:"model"`
	Stream bool   `json:"stream"`
	Prompt any    `json:"prompt"`
}

// complete processes the prompt in one piece on the loop (burning CPU for
// perChar per byte of it), then generates for w.gen, a token every 10 ms,
// each step a task of its own; with "stream": true each token is a
// server-sent event, sent as it is made. A client that goes away cancels
// it, as llama-server logs.
func (w *worker) complete(rw http.ResponseWriter, r *http.Request) {
	var req request
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	_ = json.Unmarshal(body, &req)
	promptLen := 0
	if req.Prompt != nil {
		promptLen = len(fmt.Sprint(req.Prompt))
	}
	w.busy.Add(1)
	defer w.busy.Add(-1)
	fmt.Println("standin-llama-server: slot 0 processing a request")
	if !w.post(r, func() {
		burn(time.Duration(promptLen) * w.perChar)
		w.prompt.Add(int64(max(promptLen/6, 16)))
	}) {
		return
	}
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
		if !w.post(r, func() { w.predicted.Add(1) }) {
			return
		}
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

// burn keeps the calling thread busy for d, as a prompt's decode does.
func burn(d time.Duration) {
	end := time.Now().Add(d)
	x := 0
	for time.Now().Before(end) {
		for i := range 10000 {
			x += i
		}
	}
	_ = x
}
