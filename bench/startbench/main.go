// Command startbench measures what every llamaboot process pays before it
// does anything: the start-up of `version`, `healthcheck` (run every few
// seconds by Docker and Kubernetes) and a warm re-install (a second boot),
// against the same commands of a baseline commit built beside it with the
// same flags. Runs alternate between the two binaries, so load on the
// machine falls on both alike; medians and their ratio are printed, and
// the package init cost of each binary's `version` (GODEBUG=inittrace=1).
// -before adds a third binary (say, main before a change) to the same
// alternation, so a change's before and after are measured in one run.
//
//	go run ./bench/startbench -base 5847f02 -runs 200 [-before COMMIT]
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
	before := flag.String("before", "", "a third commit to measure alongside (optional)")
	flag.Parse()
	log.SetFlags(0)

	work, err := os.MkdirTemp("", "llamaboot-startbench-")
	check(err)
	defer os.RemoveAll(work)
	names := []string{"base", "new"}
	commits := map[string]string{"base": *base}
	if *before != "" {
		names = []string{"base", "before", "new"}
		commits["before"] = *before
	}
	bins := map[string]string{}
	for _, name := range names {
		bins[name] = filepath.Join(work, "llamaboot-"+name)
	}
	// The older commits from worktrees of their own, all with make build's
	// flags.
	for name, commit := range commits {
		tree := filepath.Join(work, name+"-tree")
		run("git", "worktree", "add", "--detach", tree, commit)
		defer run("git", "worktree", "remove", "--force", tree)
		build(tree, bins[name])
	}
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
	fmt.Printf("%-28s", "command")
	for _, name := range names {
		fmt.Printf(" %12s", name+" median")
		if name != "base" {
			fmt.Printf(" %7s", "ratio")
		}
	}
	fmt.Println()
	for _, c := range commands {
		times := map[string][]time.Duration{}
		for i := 0; i < *runs; i++ {
			// Each binary takes each place in the order in turn.
			for k := range names {
				name := names[(i+k)%len(names)]
				times[name] = append(times[name], timeRun(bins[name], c.args(apps[name])))
			}
		}
		b := median(times["base"])
		fmt.Printf("%-28s", c.name)
		for _, name := range names {
			m := median(times[name])
			fmt.Printf(" %10.2fms", ms(m))
			if name != "base" {
				fmt.Printf(" %6.2fx", float64(m)/float64(b))
			}
		}
		fmt.Println()
	}
	for _, name := range names {
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
