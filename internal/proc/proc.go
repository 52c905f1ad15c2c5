// Package proc reads what the kernel says about processes in /proc: the
// CPU time of their main threads, which the watchdog takes as the one sign
// of work that probing a server cannot fake.
package proc

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// 100 on every Linux the binary runs on.
const clockTick = 10 * time.Millisecond

// MainThreadCPU is the CPU time (user + system) that the main thread of
// every process in process group pgid has used, summed. llama-server's
// main thread runs its slot loop: it burns a core while a long prompt is
// decoded and none while the loop is stuck, whatever its HTTP threads do
// to answer probes. The group covers the children llama.cpp's router mode
// starts for its models. false: no process of the group is left.
func MainThreadCPU(pgid int) (time.Duration, bool) {
	main, _, ok := GroupCPU(pgid)
	return main, ok
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

// GroupCPU is the CPU time of process group pgid: of the main threads
// of its processes (see MainThreadCPU), and of all their threads. A
// decode may run on worker threads while the main thread waits for them;
// a stuck server burns nothing in any thread but what answering probes
// takes. false: no process of the group is left.
func GroupCPU(pgid int) (main, all time.Duration, ok bool) {
	pids := groupMembers(pgid)
	if !slices.Contains(pids, pgid) {
		pids = append(pids, pgid)
	}
	for _, pid := range pids {
		p := strconv.Itoa(pid)
		f := statFields("/proc/" + p + "/stat")
		if len(f) < 13 || f[2] != strconv.Itoa(pgid) || f[0] == "Z" || f[0] == "X" {
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
		main += m
		all += time.Duration(ut+st) * clockTick
		ok = true
	}
	return main, all, ok
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
