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
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// "pid (comm) S ppid …": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return 0, false
	}
	start, err := strconv.ParseUint(f[19], 10, 64) // field 22 of stat
	return start, err == nil
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
	for _, p := range rec.Instances {
		if start, alive := procStart(p.PID); alive && start == p.Start {
			left = append(left, p)
			_ = syscall.Kill(-p.PID, syscall.SIGTERM)
		}
	}
	if len(left) == 0 {
		return
	}
	deadline := time.Now().Add(e.o.Grace)
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
