package launch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/llamaboot/llamaboot/internal/appfile"
	"github.com/llamaboot/llamaboot/internal/dirs"
)

// Instances started by plain `run` (no supervisor) in the background
// outlive it. Their pids are recorded in a small file in the app dir so
// that `status` can show them and `stop NAME` can stop them.

// RunRecord is one background instance started by `run`.
type RunRecord struct {
	Name       string  `json:"name"`
	PID        int     `json:"pid"`         // also its session and process group
	StartTicks string  `json:"start_ticks"` // /proc/<pid>/stat starttime: tells a reused pid apart
	Port       int     `json:"port"`
	URL        string  `json:"url"`
	LogFile    string  `json:"log_file"`
	StopS      float64 `json:"stop_timeout_s"`
	StartedAt  int64   `json:"started_at_unix"`
}

// RunRecordPath is where app's record lives.
func RunRecordPath(app string) string { return filepath.Join(app, ".llamaboot-run.json") }

// Alive reports whether the recorded process is still the one we started.
func (r RunRecord) Alive() bool {
	f := StatFields(r.PID)
	// Fields after the name: state is [0], starttime is field 22 of the
	// whole line, [19] here.
	return len(f) > 19 && f[0] != "Z" && f[19] == r.StartTicks
}

// ReadRunRecords returns the recorded instances (dead ones included, so a
// caller can say they are gone).
func ReadRunRecords(path string) ([]RunRecord, error) {
	b, err := appfile.ReadFile(path, 4<<20)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var recs []RunRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return recs, nil
}

// updateRunRecords rewrites the record under an exclusive lock: f gets the
// live records and returns the new list.
func updateRunRecords(path string, f func([]RunRecord) []RunRecord) error {
	if err := dirs.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	// Held only for a read and a rewrite by run, stop and entry: a holder
	// for longer is stuck (or someone else's flock), and is named.
	unlock, err := appfile.Lock(context.Background(), path+".lock", 30*time.Second, nil, nil)
	if err != nil {
		return err
	}
	defer unlock()
	recs, err := ReadRunRecords(path)
	if err != nil {
		recs = nil // a damaged record is rebuilt
	}
	var live []RunRecord
	for _, r := range recs {
		if r.Alive() {
			live = append(live, r)
		}
	}
	b, _ := json.MarshalIndent(f(live), "", "  ")
	return appfile.Replace(path, b, 0o644)
}

// recordRun adds started instances, replacing records of the same names.
func recordRun(path string, add []RunRecord) error {
	return updateRunRecords(path, func(live []RunRecord) []RunRecord {
		names := map[string]bool{}
		for _, r := range add {
			names[r.Name] = true
		}
		out := append([]RunRecord(nil), add...)
		for _, r := range live {
			if !names[r.Name] {
				out = append(out, r)
			}
		}
		return out
	})
}

// ErrNotRecorded means no live instance of that name was started by run.
var ErrNotRecorded = errors.New("no instance of that name started by run is running")

// StopRecorded stops the recorded instance name: SIGTERM to its process
// group, SIGKILL after its stop timeout. It returns what it did.
func StopRecorded(path, name string) (string, error) {
	var rec *RunRecord
	err := updateRunRecords(path, func(live []RunRecord) []RunRecord {
		var keep []RunRecord
		for _, r := range live {
			if r.Name == name {
				rec = &r
				continue
			}
			keep = append(keep, r)
		}
		return keep
	})
	if err != nil {
		return "", err
	}
	if rec == nil {
		return "", ErrNotRecorded
	}
	_ = syscall.Kill(-rec.PID, syscall.SIGTERM)
	grace := time.Duration(rec.StopS * float64(time.Second))
	deadline := time.Now().Add(grace)
	for rec.Alive() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if rec.Alive() {
		_ = syscall.Kill(-rec.PID, syscall.SIGKILL)
		return fmt.Sprintf("%s (pid %d) still running after %s: killed", name, rec.PID, grace), nil
	}
	return fmt.Sprintf("%s (pid %d) stopped", name, rec.PID), nil
}

func startTicks(pid int) string {
	if f := StatFields(pid); len(f) > 19 {
		return f[19]
	}
	return strconv.Itoa(-1)
}
