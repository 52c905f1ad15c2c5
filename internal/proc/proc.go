// Package proc reads what the kernel says about a server's processes in
// /proc: the CPU time of their main threads and of all their threads, and
// how long their main threads waited for a CPU. The watchdog takes these
// as the signs of work that probing a server cannot fake.
package proc

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// 100 on every Linux the binary runs on.
const clockTick = 10 * time.Millisecond

// Usage is what the threads of a server's processes did, summed over
// them since they started.
type Usage struct {
	// Main is the CPU time (user + system) of the main threads.
	// llama-server's main thread runs its slot loop: it burns a core while
	// a long prompt is decoded and none while the loop is stuck, whatever
	// its HTTP threads do to answer probes.
	Main time.Duration
	// All is the CPU time of all their threads: a decode may run on
	// worker threads while the main thread waits for them.
	All time.Duration
	// MainWait is the time the main threads spent runnable but waiting
	// for a CPU (schedstat's run delay; 0 where the kernel does not keep
	// it). On a machine loaded far past its cores a healthy loop may get
	// almost no CPU for seconds, but it waits in the run queue; a stuck
	// one never becomes runnable.
	MainWait time.Duration
}

// MainThreadCPU is Usage.Main of the server whose process group pgid
// leads; false when none of its processes is left.
func MainThreadCPU(pgid int) (time.Duration, bool) {
	u, ok := ServerUsage(pgid)
	return u.Main, ok
}

// ThreadCPU is the CPU time (user + system) that thread tid of process
// pid has used; false when it is gone.
func ThreadCPU(pid, tid int) (time.Duration, bool) {
	f := statFields("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/stat")
	if len(f) < 13 || f[0] == "Z" || f[0] == "X" {
		return 0, false
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(ut+st) * clockTick, true
}

// ServerUsage is the Usage of the server whose process group pgid leads:
// of every process in the group that runs the leader's executable or one
// named llama-server* (the children llama.cpp's router mode starts for its
// models; the server under a wrapper script that does not exec it). Other
// programs in the group — a wrapper's helper, a log pipe — are not the
// server, and the CPU they burn says nothing about it. When the leader's
// executable cannot be read, every process in the group counts. false: no
// process of the group is left.
func ServerUsage(pgid int) (Usage, bool) {
	pids := groupMembers(pgid)
	if !slices.Contains(pids, pgid) {
		pids = append(pids, pgid)
	}
	leaderExe, _ := os.Readlink("/proc/" + strconv.Itoa(pgid) + "/exe")
	var u Usage
	ok := false
	for _, pid := range pids {
		p := strconv.Itoa(pid)
		f := statFields("/proc/" + p + "/stat")
		if len(f) < 13 || f[2] != strconv.Itoa(pgid) || f[0] == "Z" || f[0] == "X" {
			continue
		}
		ok = true
		if leaderExe != "" && pid != pgid && !isServer(p, leaderExe) {
			continue
		}
		ut, err1 := strconv.ParseInt(f[11], 10, 64)
		st, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		m, mok := ThreadCPU(pid, pid)
		if !mok {
			continue
		}
		u.Main += m
		u.All += time.Duration(ut+st) * clockTick
		u.MainWait += runDelay(pid, pid)
	}
	return u, ok
}

// isServer says whether process pid runs the server: the leader's
// executable, or one named like llama-server.
func isServer(pid, leaderExe string) bool {
	exe, err := os.Readlink("/proc/" + pid + "/exe")
	if err != nil {
		return false
	}
	return exe == leaderExe || strings.HasPrefix(filepath.Base(exe), "llama-server")
}

// runDelay is how long thread tid of pid has waited in a run queue:
// the second field of its schedstat, in nanoseconds.
func runDelay(pid, tid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/schedstat")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	ns, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return time.Duration(ns)
}

// groupMembers lists the processes whose group is pgid. A full /proc scan
// is a few hundred small reads in a container: cheap next to a probe.
func groupMembers(pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields("/proc/" + e.Name() + "/stat"); len(f) > 2 && f[2] == strconv.Itoa(pgid) {
			out = append(out, pid)
		}
	}
	return out
}

// statFields returns the fields of a stat file after the command name
// (which may hold spaces and parentheses).
func statFields(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}
