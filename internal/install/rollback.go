package install

import (
	"context"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/llamaboot/llamaboot/internal/appfile"
	"github.com/llamaboot/llamaboot/internal/printer"
)

// historyName records, in the versions dir, the bundles in the order they
// were last activated (most recent first, one per line). Rollback and
// pruning read it: a version's own marker says when it was installed, not
// when it was last active.
const historyName = ".activated"

// DefaultKeep is how many previous bundles an install keeps for rollback.
const DefaultKeep = 1

// Kept is a bundle in the versions dir.
type Kept struct {
	Version string `json:"version"`
	Marker  Marker `json:"marker"`
}

// history lists the versions present, most recently active first: those
// the history file names, then the others by installation time.
func history(app string) []string {
	present := map[string]bool{}
	for _, v := range listVersions(app) {
		present[v] = true
	}
	var out []string
	b, _ := appfile.ReadFile(filepath.Join(app, versionsName, historyName), 0)
	for _, v := range strings.Split(string(b), "\n") {
		if present[v] {
			out = append(out, v)
			delete(present, v)
		}
	}
	var rest []string
	at := map[string]int64{}
	for v := range present {
		m, _ := ReadMarker(filepath.Join(app, versionsName, v))
		at[v] = m.InstalledAtUnix
		rest = append(rest, v)
	}
	sort.Slice(rest, func(i, k int) bool {
		if at[rest[i]] != at[rest[k]] {
			return at[rest[i]] > at[rest[k]]
		}
		return rest[i] > rest[k]
	})
	return append(out, rest...)
}

// recordActive puts version first in the history file (written whole and
// renamed into place, so a crash leaves the old or the new list).
func recordActive(app, version string) error {
	list := []string{version}
	for _, v := range history(app) {
		if v != version {
			list = append(list, v)
		}
	}
	dir := filepath.Join(app, versionsName)
	if err := appfile.Replace(filepath.Join(dir, historyName), []byte(strings.Join(list, "\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("record active bundle: %w", err)
	}
	return syncDir(dir)
}

// Active is the version <app>/llama-cpp points at ("" when none).
func Active(app string) string {
	t, err := os.Readlink(InstallDir(app))
	if err != nil {
		return ""
	}
	return filepath.Base(t)
}

// Previous lists the kept bundles other than the active one, most recently
// active first: the first is what Rollback activates.
func Previous(app string) []Kept {
	active := Active(app)
	var out []Kept
	for _, v := range history(app) {
		if v == active {
			continue
		}
		m, _ := ReadMarker(filepath.Join(app, versionsName, v))
		out = append(out, Kept{Version: v, Marker: m})
	}
	return out
}

// NoPreviousError says there is nothing to roll back to. Exit status 2.
type NoPreviousError struct {
	App, Active string
}

func (e *NoPreviousError) Error() string {
	if e.Active == "" {
		return fmt.Sprintf("nothing to roll back to: no bundle is installed in %s", e.App)
	}
	return fmt.Sprintf("nothing to roll back to: %s keeps only the active bundle %s (install keeps --keep previous bundles, default %d)",
		filepath.Join(e.App, versionsName), e.Active, DefaultKeep)
}

// BadInput marks the error as the user's input at fault.
func (e *NoPreviousError) BadInput() bool { return true }

// Rollback activates the most recently active kept bundle other than the
// current one, with the same atomic switch as an install; the bundle it
// replaces is kept, so a second rollback goes back.
func Rollback(ctx context.Context, app string, lockTimeout time.Duration, p *printer.Printer) (Result, error) {
	// A rollback removes nothing: the bundle it leaves stays for a way back.
	j := &job{Options: Options{AppDir: app, LockTimeout: lockTimeout, Printer: p, Keep: math.MaxInt32}}
	if _, err := os.Lstat(app); err != nil {
		return Result{}, &NoPreviousError{App: app}
	}
	release, err := j.lock(ctx)
	if err != nil {
		return Result{}, err
	}
	defer release()
	prev := Previous(app)
	if len(prev) == 0 {
		return Result{}, &NoPreviousError{App: app, Active: Active(app)}
	}
	return j.reactivate(prev[0].Version, prev[0].Marker, "rolled back to")
}

// reactivate switches to a kept version: no copy, no extraction.
func (j *job) reactivate(version string, m Marker, verb string) (Result, error) {
	app := j.AppDir
	if fi, err := os.Stat(filepath.Join(app, versionsName, version, "bin", "llama-server")); err != nil || !fi.Mode().IsRegular() {
		return Result{}, fmt.Errorf("kept bundle %s has no bin/llama-server; install it again", filepath.Join(app, versionsName, version))
	}
	previous, err := activate(app, version)
	if err != nil {
		return Result{}, err
	}
	if err := recordActive(app, version); err != nil {
		return Result{}, err
	}
	j.pruneKept()
	j.Printer.Stepf("%s %s (%s, build %s) at %s; nothing copied or unpacked", verb, version, m.ArchiveName, orUnknown(m.BuildTag), InstallDir(app))
	j.sayKept(previous, version)
	return Result{Marker: m, UpToDate: true, Previous: previous}, nil
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// keptMatch finds a kept bundle (not the active one) that came from this
// very source, judged as upToDate judges the active one.
func (j *job) keptMatch(label string, local fs.FileInfo) (string, Marker, bool) {
	if j.Force {
		return "", Marker{}, false
	}
	active := Active(j.AppDir)
	for _, v := range listVersions(j.AppDir) {
		if v == active {
			continue
		}
		if m, ok := j.matches(filepath.Join(j.AppDir, versionsName, v), label, local); ok {
			return v, m, true
		}
	}
	return "", Marker{}, false
}

// pruneKept removes the bundles beyond the active one and the Keep most
// recently active others.
func (j *job) pruneKept() {
	keep := j.Keep
	if keep == 0 {
		keep = DefaultKeep
	}
	if keep < 0 {
		keep = 0
	}
	active := Active(j.AppDir)
	n := 0
	for _, v := range history(j.AppDir) {
		if v == active {
			continue
		}
		if n < keep {
			n++
			continue
		}
		if os.RemoveAll(filepath.Join(j.AppDir, versionsName, v)) == nil {
			j.Printer.Stepf("removed old bundle %s", v)
		}
	}
}

// sayKept names the bundle a switch left, when pruning kept it.
func (j *job) sayKept(previous, version string) {
	dir := filepath.Join(j.AppDir, versionsName, previous)
	if previous == "" || previous == version {
		return
	}
	if _, err := os.Lstat(dir); err == nil {
		j.Printer.Stepf("previous bundle kept for rollback: %s", dir)
	}
}
