// Command routerbench measures what the router costs: requests to a fast
// upstream on loopback sent directly and through the router, alternated
// in one run. It prints the median latency with one client (and the
// router's added latency), requests per second with many clients (plain
// and streamed) and their ratio to direct, and the errors. Client, router
// and upstream share the machine, as they would in a container.
//
//	go run ./bench/routerbench -rounds 15 -requests 1000 -clients 32 -duration 1s
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
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

func main() {
	rounds := flag.Int("rounds", 15, "rounds of each measurement, direct and routed back to back")
	requests := flag.Int("requests", 1000, "sequential requests per round with one client")
	clients := flag.Int("clients", 32, "concurrent clients for throughput")
	duration := flag.Duration("duration", time.Second, "length of each throughput round")
	events := flag.Int("events", 8, "server-sent events per streamed answer")
	profile := flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
	memProfile := flag.String("memprofile", "", "write a heap profile (allocations) at the end of the run here")
	flag.Parse()
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
	log.SetFlags(0)

	// Labels split a CPU profile by part (pprof -tagfocus part=router):
	// goroutines inherit them from the one that starts them.
	var up net.Listener
	pprof.Do(context.Background(), pprof.Labels("part", "upstream"), func(context.Context) { up = upstream(*events) })
	port := up.Addr().(*net.TCPAddr).Port
	in := config.Instance{Name: "fast", Host: "127.0.0.1", Port: port}
	table := router.NewTable(&config.Router{Listen: "127.0.0.1:0", MaxWait: time.Minute, MaxQueue: 100}, []config.Instance{in})
	var r *router.Router
	pprof.Do(context.Background(), pprof.Labels("part", "router"), func(context.Context) {
		r = router.New(ready{in}, table, router.Options{Metrics: router.NewMetrics()})
	})
	defer r.Close()
	var srv *router.Server
	var err error
	pprof.Do(context.Background(), pprof.Labels("part", "router"), func(context.Context) { srv, err = r.Listen("127.0.0.1:0") })
	if err != nil {
		log.Fatal(err)
	}
	pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("part", "client")))
	defer srv.Close()
	direct := "http://" + up.Addr().String()
	routed := "http://" + srv.Addr()
	body := []byte(`{"model":"fast","messages":[{"role":"user","content":"hi"}]}`)
	stream := []byte(`{"model":"fast","stream":true,"messages":[{"role":"user","content":"hi"}]}`)

	var errs atomic.Int64
	client := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConns: 256, MaxIdleConnsPerHost: 256}}
	// Warm up both paths (connections, code paths).
	latencies(client, direct, body, 200, &errs)
	latencies(client, routed, body, 200, &errs)

	// Each round measures direct and routed back to back (which goes first
	// alternates), so a change in what else runs on the machine hits both;
	// the figures are medians over rounds of each round's pair.
	var dMed, rMed, added []float64
	var dRPS, rRPS, ratios, dStream, rStream, sratios []float64
	var dCPU, rCPU, dSCPU, rSCPU []float64         // CPU µs per answer
	var dAlloc, rAlloc, dSAlloc, rSAlloc []float64 // heap allocations per answer
	var dSys, rSys, dSSys, rSSys []float64         // read and write system calls per answer
	cpuOf := func(routed bool, d, r *[]float64) *[]float64 {
		if routed {
			return r
		}
		return d
	}
	for i := range *rounds {
		pair := func(f func(url string) float64) (d, r float64) {
			if i%2 == 0 {
				d = f(direct)
				return d, f(routed)
			}
			r = f(routed)
			return f(direct), r
		}
		d, rt := pair(func(url string) float64 { return median(latencies(client, url, body, *requests, &errs)) })
		dMed, rMed, added = append(dMed, d), append(rMed, rt), append(added, rt-d)
		d, rt = pair(func(url string) float64 {
			return throughput(client, url, body, *clients, *duration, false, &errs, cpuOf(url == routed, &dCPU, &rCPU), cpuOf(url == routed, &dAlloc, &rAlloc), cpuOf(url == routed, &dSys, &rSys))
		})
		dRPS, rRPS, ratios = append(dRPS, d), append(rRPS, rt), append(ratios, rt/d)
		d, rt = pair(func(url string) float64 {
			return throughput(client, url, stream, *clients, *duration, true, &errs, cpuOf(url == routed, &dSCPU, &rSCPU), cpuOf(url == routed, &dSAlloc, &rSAlloc), cpuOf(url == routed, &dSSys, &rSSys))
		})
		dStream, rStream, sratios = append(dStream, d), append(rStream, rt), append(sratios, rt/d)
	}
	fmt.Printf("router vs direct, fast upstream on loopback, %d rounds (medians over rounds)\n", *rounds)
	fmt.Printf("1 client, median latency:   direct %.3f ms, router %.3f ms, added %.3f ms (rounds: %s)\n",
		median(dMed), median(rMed), median(added), list(added))
	fmt.Printf("%d clients, requests/s:     direct %.0f, router %.0f, ratio %.2f× (rounds: %s)\n", *clients, median(dRPS), median(rRPS), median(ratios), list(ratios))
	fmt.Printf("%d clients, streamed (%d events) answers/s: direct %.0f, router %.0f, ratio %.2f× (rounds: %s)\n", *clients, *events, median(dStream), median(rStream), median(sratios), list(sratios))
	// What the machine's load cannot blur: CPU per answer. With the cores
	// to itself, throughput goes as its inverse.
	fmt.Printf("CPU per answer (client + router + upstream): direct %.0f µs, router %.0f µs → %.2f× (streamed: %.0f µs, %.0f µs → %.2f×)\n",
		median(dCPU), median(rCPU), median(dCPU)/median(rCPU), median(dSCPU), median(rSCPU), median(dSCPU)/median(rSCPU))
	fmt.Printf("heap allocations per answer (client + router + upstream): direct %.0f, router %.0f (streamed: %.0f, %.0f)\n",
		median(dAlloc), median(rAlloc), median(dSAlloc), median(rSAlloc))
	fmt.Printf("read+write system calls per answer: direct %.1f, router %.1f (streamed: %.1f, %.1f)\n",
		median(dSys), median(rSys), median(dSSys), median(rSSys))
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
// used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// mallocs is how many heap allocations this process has made so far.
func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// syscalls is how many read and write system calls this process has
// made so far (Linux's /proc/self/io; 0 elsewhere).
func syscalls() uint64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	var n uint64
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok && (k == "syscr" || k == "syscw") {
			x, _ := strconv.ParseUint(v, 10, 64)
			n += x
		}
	}
	return n
}

// throughput runs c clients for d and returns answers per second; cpu
// receives the CPU time used per answer, allocs the heap allocations,
// sys the read and write system calls.
func throughput(client *http.Client, url string, body []byte, c int, d time.Duration, streamed bool, errs *atomic.Int64, cpu, allocs, sys *[]float64) float64 {
	cpu0, m0, s0 := cpuTime(), mallocs(), syscalls()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var done atomic.Int64
	var wg sync.WaitGroup
	began := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := post(client, url, body, streamed); err != nil {
					errs.Add(1)
					continue
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	*cpu = append(*cpu, float64((cpuTime()-cpu0).Microseconds())/float64(max(done.Load(), 1)))
	*allocs = append(*allocs, float64(mallocs()-m0)/float64(max(done.Load(), 1)))
	*sys = append(*sys, float64(syscalls()-s0)/float64(max(done.Load(), 1)))
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
