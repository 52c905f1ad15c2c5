// Command standin-llama-server is a stand-in for llama.cpp's llama-server,
// for tests and the demo: it takes llama-server's flags (its --help lists
// them as llama-server's does; --version answers and exits), logs the argv and
// environment it was given, answers /health with 503 while "loading" and 200
// after, serves /models and /v1/models. It runs no model.
//
// Like llama-server it serves /slots (unless --no-slots: 501), /props, and
// /metrics with --metrics, all through a slot loop on its main thread
// (worker.go); POST /completion and /v1/chat/completions keep a slot busy
// while "generating", counting tokens in /metrics; with
// "stream": true they send a server-sent event per token, and a client that
// goes away is logged as "request cancelled by the client". The other
// routed endpoints (/v1/embeddings, /tokenize, …) echo the path and model.
// Answers name the server (its --alias, or the model file's name). With
// --api-key, all but /health and the model lists need the key; with
// --models-dir, /models lists the dir's .gguf files (llama.cpp's router
// mode). What supervision relies on is copied from the real server
// (checked against it by conformance_test.go): with --api-key KEY all but
// /health, /v1/health, /models and /v1/models answer 401 without
// "Authorization: Bearer KEY"; a request its client abandons is logged
// "stop: cancel task"; SIGTERM exits 0 when idle, and with a request in
// flight logs "cleaning up before exit..." and never exits (only SIGKILL
// ends it).
//
// Knobs (environment): STANDIN_LOAD_MS (loading time, default 300),
// STANDIN_EXIT_AFTER_MS and STANDIN_EXIT_CODE (crash on purpose),
// STANDIN_IGNORE_TERM=1 (ignore SIGTERM, to test SIGKILL after a grace period),
// STANDIN_GEN_MS (how long a completion keeps its slot busy, default 1000),
// STANDIN_PROMPT_NS_PER_BYTE (CPU time the loop burns per byte of a prompt,
// in one piece, default 0: a long prompt keeps /slots silent),
// STANDIN_HANG_SLOTS_AFTER=N (after N answers, /slots, /props and /metrics
// never answer again while /health keeps saying ok: a wedged worker loop),
// STANDIN_HANG_LOG_MS (while hung, print a progress line this often: busy,
// not dead), STANDIN_LINES=N (print N numbered lines "STANDIN_LINE 00000001 …",
// as fast as it can, then "STANDIN_LINES_DONE N in Xms"; -1: forever) and
// STANDIN_LINE_US (a pause between those lines), for log rotation tests;
// STANDIN_HANG_FILE=PATH (the worker loop wedges once PATH exists, as
// after STANDIN_HANG_SLOTS_AFTER), STANDIN_CHILD=1 (start a helper process
// in its process group that sleeps until killed and prints
// "STANDIN_CHILD_PID n"), for the hang watchdog; STANDIN_DEVICES (the
// devices --list-devices prints, ";"-separated), for the preflight.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// The slot loop runs on the main thread, as llama-server's does: its CPU
// time is what the watchdog reads.
func init() { runtime.LockOSThread() }

func main() {
	if os.Getenv("STANDIN_ROLE") == "child" {
		select {} // a helper that lives as long as its group does
	}
	args := os.Args[1:]
	// Like llama-server: --help and --version answer and exit 0, wherever
	// they are on the line.
	for _, a := range args {
		switch a {
		case "-h", "--help", "--usage":
			fmt.Print(helpText)
			return
		case "--version":
			fmt.Fprintf(os.Stderr, "version: 0 (standin)\nbuilt with %s for %s-%s (standin-llama-server, no model runs)\n", runtime.Version(), runtime.GOARCH, runtime.GOOS)
			return
		case "--list-devices":
			listDevices()
			return
		}
	}
	host, port, alias, model, apiKey, modelsDir := "127.0.0.1", "8080", "", "", "", ""
	slotsOn, metricsOn := true, false
	for i := 0; i < len(args); i++ {
		val := func() string {
			if i+1 < len(args) {
				i++
				return args[i]
			}
			return ""
		}
		switch args[i] {
		case "--host":
			host = val()
		case "--port":
			port = val()
		case "--alias":
			alias = val()
		case "--api-key":
			apiKey = strings.Split(val(), ",")[0] // the first of a comma-separated list
		case "--models-dir":
			modelsDir = val()
		case "--model", "-m":
			model = val()
		case "--no-slots":
			slotsOn = false
		case "--slots":
			slotsOn = true
		case "--metrics":
			metricsOn = true
		}
	}
	if alias == "" {
		alias = strings.TrimSuffix(filepath.Base(model), ".gguf")
	}
	argv, _ := json.Marshal(args)
	env := map[string]string{}
	for _, k := range []string{"CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH"} {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	envJSON, _ := json.Marshal(env)
	fmt.Printf("STANDIN_ARGV %s\nSTANDIN_ENV %s\nSTANDIN_PID %d\nSTANDIN_START_MS %d\n", argv, envJSON, os.Getpid(), time.Now().UnixMilli())
	fmt.Println("standin-llama-server: a stand-in for llama-server (no model is loaded)")

	if os.Getenv("STANDIN_IGNORE_TERM") == "1" {
		signal.Ignore(syscall.SIGTERM)
	}
	if ms := envInt("STANDIN_EXIT_AFTER_MS", -1); ms >= 0 {
		code := envInt("STANDIN_EXIT_CODE", 1)
		time.AfterFunc(time.Duration(ms)*time.Millisecond, func() {
			fmt.Printf("standin-llama-server: exiting with %d on purpose\nSTANDIN_EXIT_MS %d\n", code, time.Now().UnixMilli())
			os.Exit(code)
		})
	}

	if os.Getenv("STANDIN_CHILD") == "1" {
		startChild()
	}
	if n := envInt("STANDIN_LINES", 0); n != 0 {
		go printLines(n, time.Duration(envInt("STANDIN_LINE_US", 0))*time.Microsecond)
	}

	var ready atomic.Bool
	time.AfterFunc(time.Duration(envInt("STANDIN_LOAD_MS", 300))*time.Millisecond, func() {
		ready.Store(true)
		fmt.Println("standin-llama-server: model loaded")
	})
	mux := http.NewServeMux()
	health := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if !ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}`)
			return
		}
		fmt.Fprint(w, `{"status":"ok"}`)
	}
	mux.HandleFunc("/health", health)
	mux.HandleFunc("/v1/health", health)
	w := newWorker(os.Getenv("STANDIN_HANG_FILE"), envInt("STANDIN_HANG_SLOTS_AFTER", -1), time.Duration(envInt("STANDIN_HANG_LOG_MS", 0))*time.Millisecond,
		time.Duration(envInt("STANDIN_GEN_MS", 1000))*time.Millisecond, time.Duration(envInt("STANDIN_PROMPT_NS_PER_BYTE", 0)))
	mux.HandleFunc("/slots", func(rw http.ResponseWriter, r *http.Request) {
		if !slotsOn {
			rw.Header().Set("Content-Type", "application/json")
			rw.WriteHeader(http.StatusNotImplemented)
			fmt.Fprint(rw, `{"error":{"code":501,"message":"This server does not support slots endpoint. Start it with `+"`--slots`"+`","type":"not_supported_error"}}`)
			return
		}
		w.serve(rw, r, w.slots)
	})
	mux.HandleFunc("/props", func(rw http.ResponseWriter, r *http.Request) { w.serve(rw, r, w.props) })
	mux.HandleFunc("/metrics", func(rw http.ResponseWriter, r *http.Request) {
		if !metricsOn {
			rw.WriteHeader(http.StatusNotImplemented)
			fmt.Fprint(rw, `{"error":{"code":501,"message":"This server does not support metrics endpoint. Start it with `+"`--metrics`"+`","type":"not_supported_error"}}`)
			return
		}
		w.serve(rw, r, w.metrics)
	})
	w.name = alias
	mux.HandleFunc("POST /completion", w.complete)
	mux.HandleFunc("POST /v1/chat/completions", w.complete)
	for _, p := range []string{"/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/rerank", "/v1/messages", "/infill", "/tokenize", "/detokenize"} {
		mux.HandleFunc("POST "+p, w.echo)
	}
	listModels := func(w http.ResponseWriter, _ *http.Request) {
		ids := []string{alias}
		if modelsDir != "" { // llama.cpp's router mode: the models of the dir
			ids = nil
			files, _ := filepath.Glob(filepath.Join(modelsDir, "*.gguf"))
			for _, f := range files {
				ids = append(ids, strings.TrimSuffix(filepath.Base(f), ".gguf"))
			}
		}
		data := []map[string]any{}
		for _, id := range ids {
			data = append(data, map[string]any{"id": id, "object": "model", "owned_by": "standin", "aliases": []string{}})
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": data})
	}
	mux.HandleFunc("/v1/models", listModels)
	mux.HandleFunc("/models", listModels)
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		fmt.Fprintf(os.Stderr, "standin-llama-server: listen: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("standin-llama-server: listening on http://%s\n", ln.Addr())
	srv := &http.Server{Handler: withKey(apiKey, mux), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	go shutdownOnSignal(srv, w)
	w.loop()
}

// shutdownOnSignal ends the server as llama-server does: at once when
// idle (exit 0), never while a request is in flight (it logs that it is
// cleaning up and waits for a SIGKILL).
func shutdownOnSignal(srv *http.Server, w *worker) {
	sig := make(chan os.Signal, 1)
	if os.Getenv("STANDIN_IGNORE_TERM") == "1" {
		signal.Notify(sig, syscall.SIGINT)
	} else {
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	}
	s := <-sig
	fmt.Printf("standin-llama-server: got %v, shutting down\nI srv    operator(): cleaning up before exit...\n", s)
	if w.busy.Load() > 0 {
		select {} // as llama-server: stuck until SIGKILL
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	os.Exit(0)
}

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return v
	}
	return def
}

// printLines prints n numbered lines (forever when n < 0), each padded to
// about 100 bytes like a server's log line. Writes are whole lines of at
// most PIPE_BUF bytes, so the pipe never splits a line among the other
// lines the stand-in prints meanwhile.
func printLines(n int, pause time.Duration) {
	start := time.Now()
	buf := make([]byte, 0, 4096)
	for i := 1; n < 0 || i <= n; i++ {
		line := fmt.Appendf(nil, "STANDIN_LINE %08d %s\n", i, strings.Repeat("x", 78))
		if len(buf)+len(line) > cap(buf) || pause > 0 {
			os.Stdout.Write(buf)
			buf = buf[:0]
		}
		buf = append(buf, line...)
		if pause > 0 {
			time.Sleep(pause)
		}
	}
	buf = fmt.Appendf(buf, "STANDIN_LINES_DONE %d in %dms\n", n, time.Since(start).Milliseconds())
	os.Stdout.Write(buf)
}

// startChild starts a copy of itself as a helper in its process group, as
// llama-server's own helpers would be.
func startChild() {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "standin-llama-server: %v\n", err)
		os.Exit(1)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "STANDIN_ROLE=child")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "standin-llama-server: start helper: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("STANDIN_CHILD_PID %d\n", cmd.Process.Pid)
}

// listDevices prints the devices STANDIN_DEVICES names (";"-separated
// "CUDA0: NVIDIA A100 (81920 MiB, 80000 MiB free)"), as llama-server lists
// its GPUs: those CUDA_VISIBLE_DEVICES hides are left out (its ids are
// indexes into the list), and the CPU is never listed.
func listDevices() {
	fmt.Println("Available devices:")
	all := strings.Split(os.Getenv("STANDIN_DEVICES"), ";")
	visible, set := os.LookupEnv("CUDA_VISIBLE_DEVICES")
	n := 0
	for i, d := range all {
		if strings.TrimSpace(d) == "" {
			continue
		}
		if set && !slices.Contains(strings.Split(visible, ","), strconv.Itoa(i)) {
			continue
		}
		name, desc, _ := strings.Cut(d, ": ")
		if strings.HasPrefix(name, "CUDA") {
			name = "CUDA" + strconv.Itoa(n) // renumbered, as the CUDA runtime does
			n++
		}
		fmt.Printf("  %s: %s\n", name, desc)
	}
}

// withKey answers 401 without Authorization: Bearer KEY, as llama-server
// does with --api-key (all but /health and the model lists).
func withKey(key string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/health", "/v1/health", "/models", "/v1/models":
		default:
			if key != "" && r.Header.Get("Authorization") != "Bearer "+key {
				fmt.Println("W srv    operator(): unauthorized: Invalid API Key")
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprint(w, `{"error":{"code":401,"message":"Invalid API Key","type":"authentication_error"}}`)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
