// Command watchbench measures what supervision costs: the CPU time and
// memory of `llamaboot entry` itself (not its servers) while it supervises
// N stand-in llama-servers under the hang watchdog for a while, with
// /metrics (proxying each server's own) scraped as Prometheus would.
//
//	go run ./bench/watchbench -instances 8 -duration 60s -interval 1s
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	n := flag.Int("instances", 8, "stand-in servers to supervise")
	duration := flag.Duration("duration", 60*time.Second, "how long to measure")
	interval := flag.Duration("interval", time.Second, "liveness_interval (llamaboot's default is 15s; shorter costs more)")
	scrape := flag.Duration("scrape", 15*time.Second, "how often to scrape /metrics (0: never)")
	flag.Parse()
	log.SetFlags(0)

	work, err := os.MkdirTemp("", "llamaboot-watchbench-")
	check(err)
	defer os.RemoveAll(work)
	bin, standin := filepath.Join(work, "llamaboot"), filepath.Join(work, "llama-server")
	build(bin, "./cmd/llamaboot")
	build(standin, "./cmd/standin-llama-server")

	ports := freePorts(*n + 1)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "[master]\nllama_cpp_path = %q\n[instance.control]\nlog_dir = %q\nliveness_interval = %q\nmetrics_proxy = true\n"+
		"[instance.server]\nhost = \"127.0.0.1\"\nmetrics = true\n", standin, filepath.Join(work, "logs"), interval.String())
	for i := range *n {
		fmt.Fprintf(&cfg, "[instance.s%d.server]\nport = %d\n", i, ports[i])
	}
	cfgPath := filepath.Join(work, "cfg.toml")
	check(os.WriteFile(cfgPath, []byte(cfg.String()), 0o644))

	listen := fmt.Sprintf("127.0.0.1:%d", ports[*n])
	cmd := exec.Command(bin, "entry", "--app-dir", filepath.Join(work, "app"), "--listen", listen)
	cmd.Env = append(os.Environ(), "AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG="+cfgPath, "STANDIN_LOAD_MS=100")
	out, err := cmd.StdoutPipe()
	check(err)
	cmd.Stderr = os.Stderr
	check(cmd.Start())
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		seen := 0
		for sc.Scan() {
			if strings.Contains(sc.Text(), " ready after ") {
				if seen++; seen == *n {
					close(ready)
				}
			}
			if strings.Contains(sc.Text(), " hung") || strings.Contains(sc.Text(), " busy, left alone") {
				log.Printf("unexpected: %s", sc.Text())
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		log.Fatal("the instances did not get ready within 60s")
	}
	pid := cmd.Process.Pid
	log.Printf("%d instances ready under llamaboot entry (pid %d); liveness_interval %s, /metrics every %s; measuring for %s …",
		*n, pid, interval, *scrape, duration)

	cpu0, t0 := cpuTime(pid), time.Now()
	var rssSum, samples int64
	var scrapes int
	var scrapeBytes int
	var nextScrape <-chan time.Time
	if *scrape > 0 {
		nextScrape = time.After(0)
	}
	tick := time.NewTicker(time.Second)
	end := time.After(*duration)
loop:
	for {
		select {
		case <-tick.C:
			rssSum += status(pid, "VmRSS")
			samples++
		case <-nextScrape:
			resp, err := http.Get("http://" + listen + "/metrics")
			check(err)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			scrapes++
			scrapeBytes = len(b)
			if !bytes.Contains(b, []byte(`llamacpp:prompt_tokens_total{instance="s0"}`)) {
				log.Fatalf("/metrics lacks the proxied series:\n%s", b)
			}
			nextScrape = time.After(*scrape)
		case <-end:
			break loop
		}
	}
	cpu, wall := cpuTime(pid)-cpu0, time.Since(t0)
	hwm := status(pid, "VmHWM")
	check(cmd.Process.Signal(syscall.SIGTERM))
	_ = cmd.Wait()

	probes := float64(*n) * wall.Seconds() / interval.Seconds()
	fmt.Printf("supervisor (llamaboot entry), %d instances under the watchdog, %s:\n", *n, wall.Round(time.Second))
	fmt.Printf("  liveness_interval %s: ~%.0f probe rounds (GET /health, /slots, /metrics each)\n", interval, probes)
	fmt.Printf("  /metrics scraped %d times (%d bytes each, %d instances proxied)\n", scrapes, scrapeBytes, *n)
	fmt.Printf("  CPU: %.2fs user+system = %.2f%% of one core (%.1f µs per probe round)\n",
		cpu.Seconds(), 100*cpu.Seconds()/wall.Seconds(), float64(cpu.Microseconds())/probes)
	fmt.Printf("  RSS: %.1f MB average, %.1f MB peak (VmHWM)\n", float64(rssSum)/float64(max(samples, 1))/1024, float64(hwm)/1024)
}

func build(out, pkg string) {
	c := exec.Command("go", "build", "-o", out, pkg)
	c.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := c.CombinedOutput(); err != nil {
		log.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
}

// cpuTime is the user+system time of pid itself (not its children), from
// /proc/<pid>/stat, in clock ticks of 10 ms (USER_HZ is 100 on Linux).
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	check(err)
	// Fields after the command name in parentheses: state is 3rd, utime
	// the 14th and stime the 15th.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// status reads a kB field of /proc/<pid>/status.
func status(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	check(err)
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			v, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return v
		}
	}
	return 0
}

func freePorts(n int) []int {
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		check(err)
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
