// Command installbench measures llamaboot install against GNU tar on a
// generated bundle in llama.cpp's release layout: cold install (copy to
// cache, hash, extract, fsync, activate), warm no-op install, and peak RSS.
//
//	go run ./bench/installbench -size 600
package main

import (
	"archive/tar"
	"bufio"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
)

func main() {
	sizeMB := flag.Int("size", 600, "expanded bundle size in MB")
	bin := flag.String("llamaboot", "", "llamaboot binary (default: build one)")
	keep := flag.Bool("keep", false, "keep the work dir")
	flag.Parse()
	log.SetFlags(0)

	work, err := os.MkdirTemp("", "llamaboot-bench-")
	check(err)
	if !*keep {
		defer os.RemoveAll(work)
	}
	if *bin == "" {
		*bin = filepath.Join(work, "llamaboot")
		run("go", "build", "-o", *bin, "./cmd/llamaboot")
	}

	pkg := filepath.Join(work, "llama-b7123-bin-ubuntu-x64.tar.gz")
	log.Printf("generating a %d MB bundle (release layout, versioned library symlinks) …", *sizeMB)
	f, err := os.Create(pkg)
	check(err)
	w := bufio.NewWriterSize(f, 1<<20)
	check(bundlegen.Write(w, archive.Gzip, bundle(int64(*sizeMB)<<20)))
	check(w.Flush())
	check(f.Close())
	fi, _ := os.Stat(pkg)
	log.Printf("archive: %.0f MB compressed", float64(fi.Size())/(1<<20))

	// Three rounds, alternating contenders, medians reported. Dirty pages
	// are flushed before each run so nobody pays for another's writeback;
	// the archive itself stays in the page cache for all alike.
	const rounds = 3
	var tarTimes, coldTimes []time.Duration
	var tarRSS, coldRSS int64
	app := filepath.Join(work, "app")
	for r := range rounds {
		tarDir := filepath.Join(work, "tar-out")
		check(os.Mkdir(tarDir, 0o755))
		unix.Sync()
		d, rss := timed("tar", "-xzf", pkg, "-C", tarDir)
		tarTimes, tarRSS = append(tarTimes, d), max(tarRSS, rss)
		check(os.RemoveAll(tarDir))

		check(os.RemoveAll(app))
		unix.Sync()
		d, rss = timed(*bin, "install", "-q", "--app-dir", app, pkg)
		coldTimes, coldRSS = append(coldTimes, d), max(coldRSS, rss)
		log.Printf("round %d: tar %.2fs, llamaboot cold %.2fs", r+1, tarTimes[r].Seconds(), d.Seconds())
	}
	tarTime, coldTime := median(tarTimes), median(coldTimes)
	warmBest := time.Hour
	var warmRSS int64
	for range 5 {
		d, rss := timed(*bin, "install", "-q", "--app-dir", app, pkg)
		warmBest, warmRSS = min(warmBest, d), max(warmRSS, rss)
	}

	fmt.Printf("\nbundle %d MB expanded, %.0f MB .tar.gz\n", *sizeMB, float64(fi.Size())/(1<<20))
	fmt.Printf("%-40s %9s %10s %9s\n", "run", "time", "vs tar", "peak RSS")
	fmt.Printf("%-40s %8.2fs %10s %7.1fMB\n", "GNU tar -xzf (median of 3)", tarTime.Seconds(), "1.00x", mb(tarRSS))
	fmt.Printf("%-40s %8.2fs %9.2fx %7.1fMB\n", "llamaboot install (cold, median of 3)", coldTime.Seconds(), coldTime.Seconds()/tarTime.Seconds(), mb(coldRSS))
	fmt.Printf("%-40s %7.1fms %10s %7.1fMB\n", "llamaboot install (warm, best of 5)", float64(warmBest.Microseconds())/1000, "-", mb(warmRSS))
}

// bundle is a release-layout bundle of about total bytes: a few large
// libraries (as CUDA builds have) and the usual versioned symlinks.
func bundle(total int64) []bundlegen.Entry {
	es := bundlegen.Release("b7123", []byte("#!/bin/sh\n"))
	d := "llama-b7123/"
	parts := []struct {
		name  string
		share int64
	}{{"libggml-cuda.so", 60}, {"libllama.so.0.0.7123.big", 15}, {"libggml-cpu.so", 10}, {"llama-bench", 5}, {"libmtmd.so", 5}, {"llama-quantize", 5}}
	for _, p := range parts {
		es = append(es, bundlegen.Entry{Name: d + p.name, Type: tar.TypeReg, Mode: 0o755, Size: total * p.share / 100})
	}
	return es
}

func timed(name string, args ...string) (time.Duration, int64) {
	cmd := exec.Command(name, args...)
	cmd.Stderr = os.Stderr
	start := time.Now()
	check(cmd.Start())
	// rusage's maxrss would report the forking parent's size (the child
	// starts on its memory map), so sample the exec'd process's own
	// high-water mark, which only grows, until it exits.
	peak := make(chan int64)
	done := make(chan struct{})
	go func() {
		var hwm int64
		pid := cmd.Process.Pid
		for {
			hwm = max(hwm, vmHWM(pid), childrenHWM(pid))
			select {
			case <-done:
				peak <- hwm
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	// Reap with wait4 ourselves so the process stays readable in /proc
	// until we have sampled it.
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		log.Fatal(err)
	}
	d := time.Since(start)
	close(done)
	hwm := <-peak
	check(cmd.Wait())
	return d, hwm
}

// vmHWM reads a process's peak resident set size from /proc, in bytes.
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// childrenHWM is the largest peak RSS among pid's children (tar runs gzip).
func childrenHWM(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	var m int64
	for _, f := range strings.Fields(string(b)) {
		c, _ := strconv.Atoi(f)
		m = max(m, vmHWM(c))
	}
	return m
}

func run(name string, args ...string) {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	check(cmd.Run())
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
