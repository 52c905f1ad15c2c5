package entry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/llamaboot/llamaboot/internal/appfile"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

// The supervisor records, in the app dir, the processes it runs, so that
// the next boot can stop the ones that outlived it. Its children get
// SIGTERM when it dies (Pdeathsig), but outside a container a SIGKILLed
// supervisor leaves behind a server that ignores SIGTERM, holding its port.
const supervisedName = ".llamaboot-supervised.json"

// supervisedRecord is that record: who wrote it and what it ran. Start is
// the process's start time from /proc/PID/stat (clock ticks since boot),
// so a pid reused by an unrelated process is never taken for a survivor.
type supervisedRecord struct {
	PID       int              `json:"pid"`
	Start     uint64           `json:"start"`
	Instances []supervisedProc `json:"instances"`
}

type supervisedProc struct {
	Name  string `json:"name"`
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

func supervisedPath(app string) string { return filepath.Join(app, supervisedName) }

// procStart is the start time of pid from /proc (false: no such process,
// or a zombie, which holds nothing).
func procStart(pid int) (uint64, bool) {
	st, ok := readStat(pid)
	if !ok || st.zombie {
		return 0, false
	}
	return st.start, true
}

// procStat is what entry reads of /proc/PID/stat.
type procStat struct {
	comm   string
	zombie bool   // Z or X: exited, holds nothing but its pid
	pgid   int    // its process group
	start  uint64 // clock ticks since boot
}

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	// "pid (comm) S ppid pgrp …": comm may hold spaces and parentheses.
	i, j := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if i < 0 || j < i {
		return procStat{}, false
	}
	f := strings.Fields(string(b[j+1:]))
	if len(f) < 20 {
		return procStat{}, false
	}
	pgid, err1 := strconv.Atoi(f[2])
	start, err2 := strconv.ParseUint(f[19], 10, 64) // field 22 of stat
	if err1 != nil || err2 != nil {
		return procStat{}, false
	}
	return procStat{comm: string(b[i+1 : j]), zombie: f[0] == "Z" || f[0] == "X", pgid: pgid, start: start}, true
}

// member is a live process of a recorded server's process group.
type member struct {
	pid   int
	start uint64
	comm  string
}

func (m member) alive() bool {
	st, ok := readStat(m.pid)
	return ok && !st.zombie && st.start == m.start
}

// orphanedMembers lists the live processes of process group pgid, whose
// leader (the server, pid pgid, started at start) is gone: the helpers it
// started stay in its group, and Pdeathsig ended only the server. Linux
// reuses no pid while it is still some group's id, so while no process
// pgid exists (or only the leader's zombie), those with that group are
// its group's; none started before the leader was is (a guard besides).
// A live process pgid that is not the leader means the group had ended
// and the pid was reused: none is listed then.
func orphanedMembers(pgid int, start uint64) []member {
	if st, ok := readStat(pgid); ok && !(st.zombie && st.start == start) {
		return nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []member
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == pgid {
			continue
		}
		if st, ok := readStat(pid); ok && st.pgid == pgid && !st.zombie && st.start >= start {
			out = append(out, member{pid, st.start, st.comm})
		}
	}
	return out
}

// recordSupervised keeps the record up to date from the supervisor's
// events until they end.
func (e *Entry) recordSupervised(events <-chan supervise.Event) {
	self, _ := procStart(os.Getpid())
	running := map[string]supervisedProc{}
	path := supervisedPath(e.o.AppDir)
	write := func() {
		rec := supervisedRecord{PID: os.Getpid(), Start: self, Instances: []supervisedProc{}}
		for _, p := range running {
			rec.Instances = append(rec.Instances, p)
		}
		b, _ := json.Marshal(rec)
		_ = appfile.Replace(path, b, 0o644)
	}
	for ev := range events {
		switch ev.Kind {
		case supervise.EvStarted:
			if start, ok := procStart(ev.PID); ok {
				running[ev.Instance] = supervisedProc{Name: ev.Instance, PID: ev.PID, Start: start}
			}
		case supervise.EvExited, supervise.EvFailed, supervise.EvRemoved:
			if _, ok := running[ev.Instance]; !ok {
				continue
			}
			delete(running, ev.Instance)
		default:
			continue
		}
		write()
	}
}

// stopSurvivors stops, before anything starts, the instances a previous
// supervisor recorded that still run (it died without stopping them):
// SIGTERM to each one's process group, SIGKILL after the grace period.
// One line each says what was done.
func (e *Entry) stopSurvivors() {
	// Regular files only, capped: a FIFO there must not hang the boot.
	b, err := appfile.ReadFile(supervisedPath(e.o.AppDir), 1<<20)
	if err != nil {
		return
	}
	var rec supervisedRecord
	if json.Unmarshal(b, &rec) != nil {
		return
	}
	if start, alive := procStart(rec.PID); alive && start == rec.Start {
		return // that supervisor still runs (another entry on this app dir): its instances are its own
	}
	var left []supervisedProc
	type orphans struct {
		p       supervisedProc
		members []member
	}
	var groups []orphans
	for _, p := range rec.Instances {
		if start, alive := procStart(p.PID); alive && start == p.Start {
			left = append(left, p)
			_ = syscall.Kill(-p.PID, syscall.SIGTERM)
		} else if ms := orphanedMembers(p.PID, p.Start); len(ms) > 0 {
			groups = append(groups, orphans{p, ms})
			_ = syscall.Kill(-p.PID, syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(e.o.Grace)
	// What is left of a server's group whose server is gone (SIGKILLed
	// with its supervisor, or ended by Pdeathsig): one line per process.
	for _, g := range groups {
		for _, m := range g.members {
			for time.Now().Before(deadline) && m.alive() {
				time.Sleep(20 * time.Millisecond)
			}
			how := "SIGTERM"
			if m.alive() {
				_ = syscall.Kill(m.pid, syscall.SIGKILL)
				how = fmt.Sprintf("SIGTERM, then SIGKILL after %s", e.o.Grace)
				for end := time.Now().Add(5 * time.Second); time.Now().Before(end) && m.alive(); {
					time.Sleep(20 * time.Millisecond)
				}
			}
			e.p.Stepf("stopped pid %d (%s) of %s's process group (its server, pid %d, is gone) left running by a previous supervisor (pid %d) that ended without stopping it: %s",
				m.pid, m.comm, g.p.Name, g.p.PID, rec.PID, how)
		}
	}
	for _, p := range left {
		for time.Now().Before(deadline) && alive(p) {
			time.Sleep(20 * time.Millisecond)
		}
		how := "SIGTERM"
		if alive(p) {
			_ = syscall.Kill(-p.PID, syscall.SIGKILL)
			how = fmt.Sprintf("SIGTERM, then SIGKILL after %s", e.o.Grace)
			for end := time.Now().Add(5 * time.Second); time.Now().Before(end) && alive(p); {
				time.Sleep(20 * time.Millisecond)
			}
		}
		e.p.Stepf("stopped %s (pid %d) left running by a previous supervisor (pid %d) that ended without stopping it: %s", p.Name, p.PID, rec.PID, how)
	}
}

func alive(p supervisedProc) bool {
	start, ok := procStart(p.PID)
	return ok && start == p.Start
}
