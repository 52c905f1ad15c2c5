package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The router in front of the real llama-server: an on-demand instance
// started by the first request, a streamed completion passed on event by
// event, and an instance in llama.cpp's own router mode routed the names
// its /models lists.
func TestRouterRealServer(t *testing.T) {
	fx, exe := realServer(t) // real_test.go: the fixture, installed by llamaboot
	dir, app := t.TempDir(), t.TempDir()
	mdir := filepath.Join(dir, "models")
	os.MkdirAll(mdir, 0o755)
	if err := os.Symlink(fx.Model, filepath.Join(mdir, "tiny-512.gguf")); err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 3)
	base := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf(`[master]
llama_cpp_path = %q
[router]
listen = "127.0.0.1:%d"
[instance.control]
log_dir = %q
[instance.server]
host = "127.0.0.1"
threads = 1
[instance.tiny.control]
on_demand = true
aliases = ["small"]
[instance.tiny.server]
port = %d
model = %q
ctx_size = 512
[instance.shelf.server]
port = %d
models_dir = %q
models_max = 1
`, exe, ports[0], filepath.Join(dir, "logs"), ports[1], fx.Model, ports[2], mdir))
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg})
	stopAtEnd(t, e)
	e.waitOutput(t, `router: serving 2 instance`, 20*time.Second)
	e.waitOutput(t, `shelf ready`, 60*time.Second)
	if strings.Contains(e.out.String(), "tiny started") {
		t.Fatal("the on-demand instance started at boot")
	}

	// On demand: the first request starts it and is answered.
	r := call(t, "POST", base+"/completion", "", `{"model":"small","prompt":"Hello","n_predict":8,"seed":42}`)
	var c struct {
		Content         string `json:"content"`
		TokensPredicted int    `json:"tokens_predicted"`
	}
	if json.Unmarshal([]byte(r.body), &c); r.code != 200 || c.TokensPredicted == 0 {
		t.Fatalf("on-demand completion: %s", r)
	}
	e.waitOutput(t, `router: starting tiny for a request`, time.Second)

	// Streamed: the events come as the server makes them.
	req := `{"model":"tiny","prompt":"Once upon a time","n_predict":1500,"seed":42,"stream":true,"ignore_eos":true,"grammar":"root ::= [a-z ]*"}`
	checkRealStream(t, base+"/completion", req)

	// A client that hangs up mid-stream: the server cancels the task (and
	// had cancelled none before).
	tinyLog := filepath.Join(dir, "logs", "llama-server-tiny.log")
	if b, _ := os.ReadFile(tinyLog); strings.Contains(string(b), "cancel task") {
		t.Fatalf("a task was cancelled before any client gave up:\n%s", b)
	}
	resp, err := httpPost(base+"/completion", `{"model":"tiny","prompt":"Once upon a time","n_predict":256,"seed":42,"stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Read(make([]byte, 64))
	resp.Body.Close()
	waitFor(t, "the server to cancel the abandoned task", 20*time.Second, func() bool {
		b, _ := os.ReadFile(tinyLog)
		return strings.Contains(string(b), "cancel task")
	})

	// llama.cpp's router mode: its model list routes to it, and it loads
	// the model itself.
	r = call(t, "GET", base+"/v1/models", "", "")
	if !strings.Contains(r.body, `"id":"tiny-512","object":"model","created"`) || !strings.Contains(r.body, `"instance":"shelf"`) {
		t.Fatalf("models: %s", r)
	}
	r = call(t, "POST", base+"/completion", "", `{"model":"tiny-512","prompt":"Hello","n_predict":8,"seed":42}`)
	if json.Unmarshal([]byte(r.body), &c); r.code != 200 || c.TokensPredicted == 0 {
		t.Fatalf("router-mode completion: %s", r)
	}
	// Unknown: 404 naming both kinds.
	r = call(t, "POST", base+"/completion", "", `{"model":"nope","prompt":"x"}`)
	if msg, _ := apiError(t, r); r.code != 404 || !strings.Contains(msg, "tiny, small, shelf, tiny-512") {
		t.Errorf("unknown: %s", r)
	}
}

// checkRealStream posts a streamed completion and checks its events are
// spread over the generation, not delivered together at its end.
func checkRealStream(t *testing.T, url, body string) {
	t.Helper()
	resp, err := httpPost(url, body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	began := time.Now()
	var arrivals []time.Duration
	buf := make([]byte, 64<<10)
	var pending string
	for {
		n, err := resp.Body.Read(buf)
		pending += string(buf[:n])
		for {
			i := strings.Index(pending, "\n\n")
			if i < 0 {
				break
			}
			if strings.HasPrefix(pending[:i], "data: ") {
				arrivals = append(arrivals, time.Since(began))
			}
			pending = pending[i+2:]
		}
		if err != nil {
			break
		}
	}
	if resp.StatusCode != 200 || len(arrivals) < 10 {
		t.Fatalf("stream: status %d, %d events", resp.StatusCode, len(arrivals))
	}
	// Passed on as made: the first event came long before the last (a
	// buffered answer brings them all at once at the end). A ratio, not a
	// time, so a busy machine does not make it flake.
	if first, last := arrivals[0], arrivals[len(arrivals)-1]; first > last/2 {
		t.Errorf("%d events: the first after %s, the last after %s: buffered", len(arrivals), first, last)
	}
}

func httpPost(url, body string) (*http.Response, error) {
	return http.Post(url, "application/json", strings.NewReader(body))
}
