package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestControlStorm: four clients issue status, start, stop, restart,
// reload, logs and healthcheck at random against many instances at once.
// Every command must be answered (none waits out its 2-minute limit, none
// is refused as bad input); once the storm is over and each instance is
// started, status must equal the processes that run: each instance's pid
// alive and a child of the supervisor, and no other server process left.
// LLAMABOOT_STORM=5m (and LLAMABOOT_STORM_INSTANCES=12) for the long run
// (make bench-storm); the suite runs 15 s against 6.
func TestControlStorm(t *testing.T) {
	dur, n := 15*time.Second, 6
	if v := os.Getenv("LLAMABOOT_STORM"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		dur = d
	}
	if v, err := strconv.Atoi(os.Getenv("LLAMABOOT_STORM_INSTANCES")); err == nil {
		n = v
	}
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	cfg := filepath.Join(dir, "cfg.toml")
	ports := freePorts(t, n)
	var servers []server
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("s%02d", i)
		servers = append(servers, server{name: names[i], port: ports[i], control: `stop_timeout = "2s"` + "\ndrain_timeout = \"0s\""})
	}
	writeServers(t, cfg, filepath.Join(dir, "logs"), servers...)
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=100"})
	e.waitReady(t, names...)

	type outcome struct {
		cmd  string
		code int
		took time.Duration
		out  string
	}
	var mu sync.Mutex
	var outcomes []outcome
	var cfgMu sync.Mutex
	reloads := 0
	end := time.Now().Add(dur)
	var wg sync.WaitGroup
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), 42))
			for time.Now().Before(end) {
				name := names[r.IntN(n)]
				var args []string
				switch r.IntN(7) {
				case 0:
					args = []string{"status"}
				case 1:
					args = []string{"start", name}
				case 2:
					args = []string{"stop", name}
				case 3:
					args = []string{"restart", name}
				case 4:
					cfgMu.Lock()
					reloads++
					servers[r.IntN(n)].server = fmt.Sprintf("ctx_size = %d", 256*(1+reloads%4))
					// Written whole and renamed into place, as an editor
					// does: a reload never reads half a file.
					writeServers(t, cfg+".new", filepath.Join(dir, "logs"), servers...)
					if err := os.Rename(cfg+".new", cfg); err != nil {
						t.Error(err)
					}
					cfgMu.Unlock()
					args = []string{"reload"}
				case 5:
					args = []string{"logs", name, "--tail", "5"}
				case 6:
					args = []string{"healthcheck"}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				cmd := exec.CommandContext(ctx, llamaboot, args...)
				cmd.Env = cleanEnv("AUTO_INFER_APP_DIR=" + app)
				began := time.Now()
				out, err := cmd.CombinedOutput()
				timedOut := ctx.Err() == context.DeadlineExceeded
				cancel()
				code := 0
				if ee, ok := err.(*exec.ExitError); ok {
					code = ee.ExitCode()
				} else if err != nil {
					code = -1
				}
				if timedOut {
					code = -2 // waited out its limit: not answered
				}
				mu.Lock()
				outcomes = append(outcomes, outcome{strings.Join(args, " "), code, time.Since(began), string(out)})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()

	counts, codes := map[string]int{}, map[string]map[int]int{}
	var slowest outcome
	said := map[string]bool{}
	for _, o := range outcomes {
		if verb := strings.Fields(o.cmd)[0]; o.code == 1 && !said[verb] && verb != "healthcheck" {
			said[verb] = true
			t.Logf("a %q that exited 1 said: %s", o.cmd, strings.TrimSpace(o.out))
		}
		verb := strings.Fields(o.cmd)[0]
		counts[verb]++
		if codes[verb] == nil {
			codes[verb] = map[int]int{}
		}
		codes[verb][o.code]++
		if o.code < 0 || o.code == 2 {
			t.Errorf("%q: exit %d after %s: %s", o.cmd, o.code, o.took, o.out)
		}
		if o.took > slowest.took {
			slowest = o
		}
	}
	t.Logf("%d commands in %s against %d instances: %v; exit codes %v; slowest %q %s", len(outcomes), dur, n, counts, codes, slowest.cmd, slowest.took.Round(time.Millisecond))

	// Settle: start every instance, then status must be what runs.
	for _, name := range names {
		if r := control(t, app, "start", name); r.code != 0 {
			t.Errorf("start %s after the storm: %s", name, r)
		}
	}
	st := e.waitReady(t, names...)
	var pids []int
	for _, name := range names {
		in := st[name]
		if !processAlive(in.PID) || parentOf(in.PID) != e.cmd.Process.Pid {
			t.Errorf("%s: status says pid %d, which is not a live child of the supervisor", name, in.PID)
		}
		if argv, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", in.PID)); !strings.Contains(string(argv), strconv.Itoa(in.Port)) {
			t.Errorf("%s: pid %d does not serve port %d: %q", name, in.PID, in.Port, argv)
		}
		pids = append(pids, in.PID)
	}
	children := childrenOf(e.cmd.Process.Pid)
	sort.Ints(pids)
	sort.Ints(children)
	if !slices.Equal(pids, children) {
		t.Errorf("status pids %v, but the supervisor's children are %v", pids, children)
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	e.wait(t, 30*time.Second)
}

// parentOf reads a process's parent from /proc.
func parentOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// childrenOf lists the live (not zombie) children of pid.
func childrenOf(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err == nil && parentOf(p) == pid && processAlive(p) {
			out = append(out, p)
		}
	}
	return out
}
