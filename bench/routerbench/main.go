// Command routerbench measures what the router costs: requests to a fast
// upstream on loopback sent directly and through the router, alternated
// in one run (and through llama-swap too, given its binary with
// -llama-swap or LLAMA_SWAP). It prints the median latency with one
// client (and what each proxy adds), requests per second with many
// clients (plain and streamed) and their ratio to direct, CPU time,
// allocations and system calls per answer, and the errors. Client, proxy
// and upstream share the machine, as they would in a container.
//
//	go run ./bench/routerbench -rounds 15 -requests 1000 -clients 32 -duration 1s
//	LLAMA_SWAP=/path/to/llama-swap go run ./bench/routerbench
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/router"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

// path is one way to the upstream, with what it measured, a value per
// round each.
type path struct {
	name string
	url  string
	// proc is the proxy's own process when it runs apart (llama-swap):
	// its CPU time and system calls are counted with this one's.
	proc int

	latency, rps, srps   []float64 // median ms with one client; answers/s with many
	cpu, scpu            []float64 // CPU µs per answer (plain, streamed)
	allocs, sallocs      []float64 // heap allocations per answer (this process only)
	sys, ssys            []float64 // read and write system calls per answer
	added, ratio, sratio []float64 // against direct in the same round
}

func main() {
	rounds := flag.Int("rounds", 15, "rounds of each measurement, every path back to back")
	requests := flag.Int("requests", 1000, "sequential requests per round with one client")
	clients := flag.Int("clients", 32, "concurrent clients for throughput")
	duration := flag.Duration("duration", time.Second, "length of each throughput round")
	events := flag.Int("events", 8, "server-sent events per streamed answer")
	swapBin := flag.String("llama-swap", os.Getenv("LLAMA_SWAP"), "llama-swap binary to measure too (default $LLAMA_SWAP; none: not measured)")
	profile := flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
	memProfile := flag.String("memprofile", "", "write a heap profile (allocations) at the end of the run here")
	flag.Parse()
	log.SetFlags(0)
	if *memProfile != "" {
		defer func() {
			f, err := os.Create(*memProfile)
			if err != nil {
				log.Fatal(err)
			}
			defer f.Close()
			if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
				log.Fatal(err)
			}
		}()
	}
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}

	// Labels split a CPU profile by part (pprof -tagfocus part=router):
	// goroutines inherit them from the one that starts them.
	var up net.Listener
	pprof.Do(context.Background(), pprof.Labels("part", "upstream"), func(context.Context) { up = upstream(*events) })
	port := up.Addr().(*net.TCPAddr).Port
	in := config.Instance{Name: "fast", Host: "127.0.0.1", Port: port}
	table := router.NewTable(&config.Router{Listen: "127.0.0.1:0", MaxWait: time.Minute, MaxQueue: 100}, []config.Instance{in})
	var r *router.Router
	var srv *router.Server
	var err error
	pprof.Do(context.Background(), pprof.Labels("part", "router"), func(context.Context) {
		r = router.New(ready{in}, table, router.Options{Metrics: router.NewMetrics()})
		srv, err = r.Listen("127.0.0.1:0")
	})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	defer srv.Close()
	pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("part", "client")))
	paths := []*path{{name: "direct", url: "http://" + up.Addr().String()}, {name: "router", url: "http://" + srv.Addr()}}
	if *swapBin != "" {
		p, stop, err := llamaSwap(*swapBin, "http://"+up.Addr().String())
		if err != nil {
			log.Fatalf("llama-swap: %v", err)
		}
		defer stop()
		paths = append(paths, p)
	}
	body := []byte(`{"model":"fast","messages":[{"role":"user","content":"hi"}]}`)
	stream := []byte(`{"model":"fast","stream":true,"messages":[{"role":"user","content":"hi"}]}`)

	var errs atomic.Int64
	client := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConns: 256, MaxIdleConnsPerHost: 256}}
	for _, p := range paths { // warm up (connections, code paths)
		latencies(client, p.url, body, 200, &errs)
	}

	// Each round measures every path back to back (which goes first
	// rotates), so a change in what else runs on the machine hits all;
	// the figures are medians over rounds, ratios those of each round.
	direct := paths[0]
	for i := range *rounds {
		order := append(slices.Clone(paths[i%len(paths):]), paths[:i%len(paths)]...)
		each := func(f func(p *path)) {
			for _, p := range order {
				f(p)
			}
		}
		each(func(p *path) { p.latency = append(p.latency, median(latencies(client, p.url, body, *requests, &errs))) })
		each(func(p *path) {
			p.rps = append(p.rps, throughput(client, p, body, *clients, *duration, false, &errs, &p.cpu, &p.allocs, &p.sys))
		})
		each(func(p *path) {
			p.srps = append(p.srps, throughput(client, p, stream, *clients, *duration, true, &errs, &p.scpu, &p.sallocs, &p.ssys))
		})
		for _, p := range paths[1:] {
			p.added = append(p.added, p.latency[i]-direct.latency[i])
			p.ratio = append(p.ratio, p.rps[i]/direct.rps[i])
			p.sratio = append(p.sratio, p.srps[i]/direct.srps[i])
		}
	}
	fmt.Printf("proxies vs direct, fast upstream on loopback, %d rounds (medians over rounds)\n", *rounds)
	fmt.Printf("1 client, median latency: direct %.3f ms\n", median(direct.latency))
	fmt.Printf("%d clients: direct %.0f requests/s, %.0f streamed (%d events) answers/s\n", *clients, median(direct.rps), median(direct.srps), *events)
	fmt.Printf("CPU per answer (client + proxy + upstream): direct %.0f µs (streamed %.0f µs); allocations %.0f (%.0f); read+write system calls %.1f (%.1f)\n",
		median(direct.cpu), median(direct.scpu), median(direct.allocs), median(direct.sallocs), median(direct.sys), median(direct.ssys))
	for _, p := range paths[1:] {
		fmt.Printf("%s:\n", p.name)
		fmt.Printf("  1 client, median latency: %.3f ms, added %.3f ms (rounds: %s)\n", median(p.latency), median(p.added), list(p.added))
		fmt.Printf("  %d clients, requests/s: %.0f, ratio %.2f× (rounds: %s)\n", *clients, median(p.rps), median(p.ratio), list(p.ratio))
		fmt.Printf("  %d clients, streamed answers/s: %.0f, ratio %.2f× (rounds: %s)\n", *clients, median(p.srps), median(p.sratio), list(p.sratio))
		// What the machine's load blurs least: CPU per answer. With the
		// cores to themselves, throughput goes as its inverse.
		fmt.Printf("  CPU per answer: %.0f µs → %.2f× of direct's (streamed: %.0f µs → %.2f×)\n",
			median(p.cpu), median(direct.cpu)/median(p.cpu), median(p.scpu), median(direct.scpu)/median(p.scpu))
		if p.proc == 0 {
			fmt.Printf("  heap allocations per answer: %.0f (streamed: %.0f)\n", median(p.allocs), median(p.sallocs))
		}
		fmt.Printf("  read+write system calls per answer: %.1f (streamed: %.1f)\n", median(p.sys), median(p.ssys))
	}
	fmt.Printf("errors: %d\n", errs.Load())
	if errs.Load() > 0 {
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// upstream is a fast fake llama-server: a small JSON answer, or n
// server-sent events flushed one by one.
func upstream(n int) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	answer := []byte(`{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}]}`)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if bytes.Contains(b, []byte(`"stream":true`)) {
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range n {
				fmt.Fprintf(w, "data: {\"choices\":[{\"delta\":{\"content\":\"t%d\"}}]}\n\n", i)
				w.(http.Flusher).Flush()
			}
			fmt.Fprint(w, "data: [DONE]\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(answer)
	})
	go (&http.Server{Handler: h}).Serve(ln)
	return ln
}

// llamaSwap starts llama-swap in front of the upstream: its one model
// "fast" is a process that only sleeps (the upstream runs here), reached
// at up, with its concurrency limit raised to 64 (the default 10 would
// refuse 32 clients with 429s).
func llamaSwap(bin, up string) (*path, func(), error) {
	dir, err := os.MkdirTemp("", "routerbench-llama-swap-")
	if err != nil {
		return nil, nil, err
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		return nil, nil, err
	}
	conf := fmt.Sprintf(`healthCheckTimeout: 15
logLevel: error
logToStdout: none
sendLoadingState: false
models:
  fast:
    cmd: %s 100000
    proxy: %s
    checkEndpoint: /health
    concurrencyLimit: 64
`, sleep, up)
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(conf), 0o644); err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "-config", filepath.Join(dir, "config.yaml"), "-listen", addr)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		os.RemoveAll(dir)
	}
	// Ready when a request through it is answered (it starts the model on
	// the first one).
	client := &http.Client{Timeout: 20 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Post("http://"+addr+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"fast"}`))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			stop()
			return nil, nil, fmt.Errorf("not answering at %s: %v\n%s", addr, err, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return &path{name: "llama-swap", url: "http://" + addr, proc: cmd.Process.Pid}, stop, nil
}

// ready is a supervisor whose one instance is always ready.
type ready struct{ in config.Instance }

func (ready) Start(string) error { return nil }
func (ready) Stop(string) error  { return nil }
func (ready) Subscribe() (<-chan supervise.Event, func()) {
	return make(chan supervise.Event), func() {}
}
func (b ready) Snapshots() []supervise.Snapshot {
	return []supervise.Snapshot{{Spec: b.in, State: supervise.Ready, WantUp: true}}
}

func post(client *http.Client, url string, body []byte, streamed bool) error {
	resp, err := client.Post(url+"/v1/chat/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if streamed {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if sc.Text() == "data: [DONE]" {
				return nil
			}
		}
		return fmt.Errorf("stream ended without [DONE]")
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}

// latencies sends n requests one after another; milliseconds each.
func latencies(client *http.Client, url string, body []byte, n int, errs *atomic.Int64) []float64 {
	out := make([]float64, 0, n)
	for range n {
		began := time.Now()
		if err := post(client, url, body, false); err != nil {
			errs.Add(1)
			continue
		}
		out = append(out, float64(time.Since(began).Microseconds())/1000)
	}
	return out
}

// cpuTime is the CPU time this process (client, router and upstream) has
// used so far, and process pid's too when it is not 0.
func cpuTime(pid int) time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	d := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if pid != 0 {
		// utime and stime, fields 14 and 15 of /proc/PID/stat, in clock
		// ticks (100 a second on Linux), after the command's parenthesis.
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if i := bytes.LastIndexByte(b, ')'); i >= 0 {
			if f := strings.Fields(string(b[i+1:])); len(f) > 13 {
				u, _ := strconv.ParseInt(f[11], 10, 64)
				s, _ := strconv.ParseInt(f[12], 10, 64)
				d += time.Duration(u+s) * 10 * time.Millisecond
			}
		}
	}
	return d
}

// mallocs is how many heap allocations this process has made so far.
func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// syscalls is how many read and write system calls this process (and
// process pid when not 0) has made so far (Linux's /proc/PID/io).
func syscalls(pid int) uint64 {
	n := ioCalls("/proc/self/io")
	if pid != 0 {
		n += ioCalls(fmt.Sprintf("/proc/%d/io", pid))
	}
	return n
}

func ioCalls(file string) uint64 {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	var n uint64
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok && (k == "syscr" || k == "syscw") {
			x, _ := strconv.ParseUint(v, 10, 64)
			n += x
		}
	}
	return n
}

// throughput runs c clients on p for d and returns answers per second;
// cpu receives the CPU time used per answer, allocs the heap
// allocations, sys the read and write system calls.
func throughput(client *http.Client, p *path, body []byte, c int, d time.Duration, streamed bool, errs *atomic.Int64, cpu, allocs, sys *[]float64) float64 {
	cpu0, m0, s0 := cpuTime(p.proc), mallocs(), syscalls(p.proc)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var done atomic.Int64
	var wg sync.WaitGroup
	began := time.Now()
	for range c {
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := post(client, p.url, body, streamed); err != nil {
					errs.Add(1)
					continue
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	n := float64(max(done.Load(), 1))
	*cpu = append(*cpu, float64((cpuTime(p.proc)-cpu0).Microseconds())/n)
	*allocs = append(*allocs, float64(mallocs()-m0)/n)
	*sys = append(*sys, float64(syscalls(p.proc)-s0)/n)
	return float64(done.Load()) / time.Since(began).Seconds()
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func list(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.3f", x)
	}
	return strings.Join(parts, " ")
}
