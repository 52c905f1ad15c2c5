// Command startbench measures what every llamaboot process pays before it
// does anything: the start-up of `version`, `healthcheck` (run every few
// seconds by Docker and Kubernetes) and a warm re-install (a second boot),
// against the same commands of a baseline commit built beside it with the
// same flags. Runs alternate between the two binaries, so load on the
// machine falls on both alike; medians and their ratio are printed, and
// the package init cost of each binary's `version` (GODEBUG=inittrace=1).
//
//	go run ./bench/startbench -base 5847f02 -runs 200
package main

import (
	"bufio"
	"bytes"
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

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
)

func main() {
	base := flag.String("base", "5847f02", "baseline commit")
	runs := flag.Int("runs", 200, "runs of each command by each binary")
	flag.Parse()
	log.SetFlags(0)

	work, err := os.MkdirTemp("", "llamaboot-startbench-")
	check(err)
	defer os.RemoveAll(work)
	bins := map[string]string{"base": filepath.Join(work, "llamaboot-base"), "new": filepath.Join(work, "llamaboot-new")}
	// The baseline from a worktree of the commit, both with make build's flags.
	tree := filepath.Join(work, "base-tree")
	run("git", "worktree", "add", "--detach", tree, *base)
	defer run("git", "worktree", "remove", "--force", tree)
	build(tree, bins["base"])
	build(".", bins["new"])

	// A small bundle, installed once into each binary's own app dir: what
	// follows is a second boot's install, which has nothing to do.
	pkg := filepath.Join(work, "llama-b7123-bin-ubuntu-x64.tar.gz")
	var buf bytes.Buffer
	check(bundlegen.Write(&buf, archive.Gzip, bundlegen.Release("b7123", []byte("#!/bin/sh\n"))))
	check(os.WriteFile(pkg, buf.Bytes(), 0o644))
	apps := map[string]string{}
	for name, bin := range bins {
		apps[name] = filepath.Join(work, "app-"+name)
		run(bin, "install", "-q", "--app-dir", apps[name], pkg)
	}

	commands := []struct {
		name string
		args func(app string) []string
	}{
		{"version", func(string) []string { return []string{"version"} }},
		{"healthcheck (no supervisor)", func(app string) []string { return []string{"healthcheck", "--app-dir", app} }},
		{"warm re-install", func(app string) []string { return []string{"install", "-q", "--app-dir", app, pkg} }},
	}
	fmt.Printf("%-28s %12s %12s %7s\n", "command", "base median", "new median", "ratio")
	for _, c := range commands {
		times := map[string][]time.Duration{}
		for i := 0; i < *runs; i++ {
			order := []string{"base", "new"}
			if i%2 == 1 {
				order = []string{"new", "base"}
			}
			for _, name := range order {
				times[name] = append(times[name], timeRun(bins[name], c.args(apps[name])))
			}
		}
		b, n := median(times["base"]), median(times["new"])
		fmt.Printf("%-28s %10.2fms %10.2fms %6.2fx\n", c.name, ms(b), ms(n), float64(n)/float64(b))
	}
	for _, name := range []string{"base", "new"} {
		fi, err := os.Stat(bins[name])
		check(err)
		total, n, heavy := initCost(bins[name], *runs)
		fmt.Printf("%s: %.1f MB, %d package inits, median init total %.2fms; costliest: %s\n", name, float64(fi.Size())/1e6, n, total, heavy)
	}
}

func build(dir, out string) {
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "./cmd/llamaboot")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		log.Fatalf("build in %s: %v\n%s", dir, err, b)
	}
}

// timeRun is the wall time of one run, exec to exit (its exit status
// does not matter: healthcheck without a supervisor exits 1).
func timeRun(bin string, args []string) time.Duration {
	cmd := exec.Command(bin, args...)
	start := time.Now()
	_ = cmd.Run()
	return time.Since(start)
}

// initCost runs `version` with GODEBUG=inittrace=1: the median over runs
// of the summed package init clock time, and the three costliest packages
// of the last run.
func initCost(bin string, runs int) (float64, int, string) {
	var totals []float64
	var n int
	type pkg struct {
		name string
		ms   float64
	}
	var last []pkg
	for i := 0; i < runs; i++ {
		cmd := exec.Command(bin, "version")
		cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		check(cmd.Run())
		sum := 0.0
		last, n = nil, 0
		sc := bufio.NewScanner(&stderr)
		for sc.Scan() {
			// "init github.com/x/y @1.2 ms, 0.31 ms clock, 9216 bytes, 3 allocs"
			f := strings.Fields(sc.Text())
			if len(f) < 6 || f[0] != "init" {
				continue
			}
			v, err := strconv.ParseFloat(f[4], 64)
			if err != nil {
				continue
			}
			sum += v
			n++
			last = append(last, pkg{f[1], v})
		}
		totals = append(totals, sum)
	}
	slices.SortFunc(last, func(a, b pkg) int { return int((b.ms - a.ms) * 1e6) })
	var top []string
	for _, p := range last[:min(3, len(last))] {
		top = append(top, fmt.Sprintf("%s %.2fms", p.name, p.ms))
	}
	slices.Sort(totals)
	return totals[len(totals)/2], n, strings.Join(top, ", ")
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func run(name string, args ...string) {
	if b, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		log.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, b)
	}
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
