package supervise

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/llamaboot/llamaboot/internal/bytesize"
	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/printer"
)

// Diff says what Apply(desired) would do, doing nothing.
func (s *Supervisor) Diff(desired []config.Instance) ApplyResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	var res ApplyResult
	want := map[string]bool{}
	for _, in := range desired {
		want[in.Name] = true
		switch m := s.owners[in.Name]; {
		case m == nil || m.removing:
			res.Added = append(res.Added, in.Name)
		case m.spec.Same(in):
			res.Unchanged = append(res.Unchanged, in.Name)
		default:
			res.Changed = append(res.Changed, in.Name)
		}
	}
	for _, name := range s.order {
		if m := s.owners[name]; !want[name] && !m.removing && !m.adopted {
			res.Removed = append(res.Removed, name)
		}
	}
	return res
}

// Reload applies desired as Apply does, but in two steps: removed
// instances are stopped (and changed ones restarted) first, and new ones
// start once the removed are down, so an instance renamed in the config
// finds its port free. A changed instance whose new port another changed
// or removed instance holds starts once that one's process has ended, so
// that a reload may swap ports (see portOrder).
func (s *Supervisor) Reload(desired []config.Instance) (ApplyResult, error) {
	diff := s.Diff(desired)
	var gone []<-chan struct{}
	var longest time.Duration
	s.mu.Lock()
	for _, n := range diff.Removed {
		m := s.owners[n]
		gone = append(gone, m.o.done)
		longest = max(longest, m.spec.DrainTimeout+m.spec.StopTimeout)
	}
	steps := s.portOrder(diff, desired)
	s.mu.Unlock()
	first := slices.DeleteFunc(slices.Clone(desired), func(in config.Instance) bool { return slices.Contains(diff.Added, in.Name) })
	res, err := s.apply(first, steps)
	if err != nil || len(diff.Added) == 0 {
		return res, err
	}
	// Bounded: a process the kernel cannot kill must not hold up the rest.
	deadline := s.deps.Clock.After(2*longest + 10*time.Second)
wait:
	for _, done := range gone {
		select {
		case <-done:
		case <-deadline:
			break wait
		}
	}
	rest, err := s.Apply(desired)
	res.Added = rest.Added
	for _, n := range rest.Added {
		res.decided(n, rest.Decisions[n]) // what to wait for: the second Apply started them
	}
	return res, err
}

// reloadStep is what a reload asks of one changed instance beyond its new
// spec: to say when its old process has ended (down), or to start only
// once the old processes on its new port have (gate).
type reloadStep struct {
	down chan struct{}
	gate <-chan struct{}
}

// portOrder orders the starts of a reload's changed instances by port:
// one whose new port a changed or removed instance of the same reload
// listens on now (ports swapped, or shifted along) starts once that
// instance's process has ended. Every old process is stopped at once and
// only starts wait, so a cycle of ports cannot deadlock; each wait is
// bounded, as the wait for removed instances is. s.mu is held.
func (s *Supervisor) portOrder(diff ApplyResult, desired []config.Instance) map[string]reloadStep {
	holders := map[int][]string{} // port → the instances of the reload that listen on it now
	for _, n := range slices.Concat(diff.Changed, diff.Removed) {
		if p := s.owners[n].spec.Port; p > 0 {
			holders[p] = append(holders[p], n)
		}
	}
	steps := map[string]reloadStep{}
	for _, in := range desired {
		if !slices.Contains(diff.Changed, in.Name) {
			continue
		}
		var waits [][2]<-chan struct{} // per holder: its owner ended, or its old process did
		var longest time.Duration
		for _, h := range holders[in.Port] {
			if h == in.Name || in.Port <= 0 {
				continue
			}
			m := s.owners[h]
			longest = max(longest, m.spec.DrainTimeout+m.spec.StopTimeout)
			w := [2]<-chan struct{}{m.o.done} // removed (or ended meanwhile)
			if slices.Contains(diff.Changed, h) {
				st := steps[h]
				if st.down == nil {
					st.down = make(chan struct{})
					steps[h] = st
				}
				w[1] = st.down
			}
			waits = append(waits, w)
		}
		if len(waits) == 0 {
			continue
		}
		gate := make(chan struct{})
		st := steps[in.Name]
		st.gate = gate
		steps[in.Name] = st
		// Bounded: a process the kernel cannot kill must not keep this
		// one down for good (its start then says who holds the port).
		deadline := s.deps.Clock.After(2*longest + 10*time.Second)
		go func() {
			defer close(gate)
			for _, w := range waits {
				select {
				case <-w[0]:
				case <-w[1]: // nil for a removed holder: its owner's end says it
				case <-deadline:
					return
				}
			}
		}()
	}
	return steps
}

// SpecChanges says what differs between an instance's old and new spec,
// in the config's words.
func SpecChanges(a, b config.Instance) []string {
	var out []string
	diff := func(key, x, y string) {
		if x != y {
			out = append(out, fmt.Sprintf("%s %s → %s", key, x, y))
		}
	}
	diff("executable", a.Executable, b.Executable)
	if !slices.Equal(a.Cmd, b.Cmd) {
		changes := config.ArgChanges(a.Cmd, b.Cmd)
		if len(changes) == 0 { // the same flags in another order
			changes = []string{"argument order"}
		}
		out = append(out, changes...)
	}
	diff("gpu_ids", gpuIDs(a), gpuIDs(b))
	if !maps.Equal(a.Env, b.Env) && gpuIDs(a) == gpuIDs(b) || a.LibDir != b.LibDir {
		out = append(out, "environment")
	}
	diff("log_file", a.LogFile, b.LogFile)
	diff("log_max_size", bytesize.Format(a.LogMaxSize), bytesize.Format(b.LogMaxSize))
	diff("log_max_files", fmt.Sprint(a.LogMaxFiles), fmt.Sprint(b.LogMaxFiles))
	diff("log_to_stdout", fmt.Sprint(a.LogToStdout), fmt.Sprint(b.LogToStdout))
	diff("restart", a.Restart, b.Restart)
	diff("ready_timeout", a.ReadyTimeout.String(), b.ReadyTimeout.String())
	diff("stop_timeout", a.StopTimeout.String(), b.StopTimeout.String())
	diff("background", fmt.Sprint(a.Background), fmt.Sprint(b.Background))
	if len(out) == 0 {
		out = append(out, "settings") // e.g. where a model is fetched from
	}
	return out
}

func gpuIDs(in config.Instance) string {
	if in.GPUIDs == nil {
		return "(unset)"
	}
	return *in.GPUIDs
}

// Reloader re-reads the config the supervisor serves and applies the
// difference, one reload at a time, for `llamaboot reload`, SIGHUP and
// the config watch.
type Reloader struct {
	Sup *Supervisor
	// Load reads and fully validates the config: the file, the instances
	// it wants running (none when master.enable is false), and warnings.
	Load func() (file string, desired []config.Instance, warnings []string, err error)
	// P logs each reload and each refused one.
	P *printer.Printer
	// After, when set, is called once after every Load that succeeded:
	// apply says whether the reload was applied (false: dry run, or the
	// supervisor refused). It settles what the reload means for instances
	// the supervisor does not run yet (waiting for their model downloads)
	// and returns one report line for each.
	After func(apply bool) []string

	mu sync.Mutex
	// routing is each instance's router keys as the last applied reload
	// gave them: the supervisor keeps an unchanged instance's spec as it
	// was, and router keys restart nothing, so its snapshot would show
	// the boot's keys for good.
	routing map[string]config.Routing
}

// RoutingChanges says what differs between two instances' router keys
// (the router applies them; no restart), in the config's words.
func RoutingChanges(a, b config.Routing) []string {
	var out []string
	diff := func(key, x, y string) {
		if x != y {
			out = append(out, fmt.Sprintf("%s %s → %s", key, x, y))
		}
	}
	list := func(l []string) string {
		if len(l) == 0 {
			return "(none)"
		}
		return strings.Join(l, ", ")
	}
	name := func(g string) string {
		if g == "" {
			return "(none)"
		}
		return g
	}
	diff("aliases", list(a.Aliases), list(b.Aliases))
	diff("on_demand", fmt.Sprint(a.OnDemand), fmt.Sprint(b.OnDemand))
	diff("idle_timeout", a.IdleTimeout.String(), b.IdleTimeout.String())
	diff("group", name(a.Group), name(b.Group))
	return out
}

// ReloadReport is what a reload found and did (or, dry, would do).
type ReloadReport struct {
	File     string
	DryRun   bool
	Warnings []string
	Result   ApplyResult
	lines    []string
}

// Lines are the report for the operator: one line per instance.
func (r ReloadReport) Lines() []string { return r.lines }

// Run reloads; why says what asked ("llamaboot reload", "SIGHUP"). On a
// config error nothing changes and the error (from Load) lists every
// problem with its file:line.
func (r *Reloader) Run(dryRun bool, why string) (ReloadReport, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	file, desired, warnings, err := r.Load()
	rep := ReloadReport{File: file, DryRun: dryRun, Warnings: warnings}
	if err != nil {
		err = &RefusedError{Err: err, Warnings: warnings}
		if !dryRun {
			r.P.Errorf("reload (%s): %v", why, err)
		}
		return rep, err
	}
	afterCalled := false
	after := func(apply bool) []string {
		if afterCalled || r.After == nil {
			return nil
		}
		afterCalled = true
		return r.After(apply)
	}
	defer after(false)
	before := map[string]Snapshot{}
	for _, sn := range r.Sup.Snapshots() {
		before[sn.Spec.Name] = sn
	}
	specs := map[string]config.Instance{}
	for _, in := range desired {
		specs[in.Name] = in
	}
	if dryRun {
		rep.Result = r.Sup.Diff(desired)
	} else {
		for _, w := range warnings {
			r.P.Warnf("%s", w)
		}
		if rep.Result, err = r.Sup.Reload(desired); err != nil {
			if !errors.Is(err, ErrShuttingDown) {
				r.P.Errorf("reload (%s) of %s: %v", why, file, err)
			}
			return rep, err
		}
	}
	res, verb := rep.Result, func(did, would string) string {
		if dryRun {
			return would
		}
		return did
	}
	for _, n := range res.Added {
		if specs[n].Routing.OnDemand {
			// The supervisor leaves it down: the router starts it.
			rep.lines = append(rep.lines, fmt.Sprintf("+ %s: %s, on demand (starts at its first request)", n, verb("added", "would add")))
			continue
		}
		rep.lines = append(rep.lines, fmt.Sprintf("+ %s: %s (%s)", n, verb("started", "would start"), specs[n].URL))
	}
	for _, n := range res.Changed {
		did := verb("restarted", "would restart")
		if slices.Contains(res.KeptDown, n) || dryRun && !before[n].WantUp {
			did = verb("kept down (stopped by the operator), new settings at its next start", "would keep down (stopped by the operator), new settings at its next start")
			if specs[n].Routing.OnDemand {
				did = verb("down until a request comes (on demand), new settings then", "would stay down until a request comes (on demand), new settings then")
			}
		}
		rep.lines = append(rep.lines, fmt.Sprintf("~ %s: %s: %s", n, did, strings.Join(SpecChanges(before[n].Spec, specs[n]), "; ")))
	}
	for _, n := range res.Removed {
		rep.lines = append(rep.lines, fmt.Sprintf("- %s: %s", n, verb("stopped and removed", "would stop and remove")))
	}
	for _, n := range res.Unchanged {
		old, ok := r.routing[n]
		if !ok {
			old = before[n].Spec.Routing
		}
		if ch := RoutingChanges(old, specs[n].Routing); len(ch) > 0 {
			rep.lines = append(rep.lines, fmt.Sprintf("~ %s: %s (router; no restart)", n, strings.Join(ch, "; ")))
			continue
		}
		state := before[n].State.String()
		if pid := before[n].PID; pid != 0 {
			state = fmt.Sprintf("pid %d", pid)
		}
		rep.lines = append(rep.lines, fmt.Sprintf("= %s: unchanged (%s)", n, state))
	}
	if !dryRun {
		r.routing = map[string]config.Routing{}
		for n, in := range specs {
			r.routing[n] = in.Routing
		}
	}
	held := after(!dryRun)
	rep.lines = append(rep.lines, held...)
	if !dryRun {
		waiting := ""
		if len(held) > 0 {
			waiting = fmt.Sprintf(", %d waiting for their models", len(held))
		}
		r.P.Stepf("reload (%s) of %s: %d added, %d changed, %d removed, %d unchanged%s", why, file,
			len(res.Added), len(res.Changed), len(res.Removed), len(res.Unchanged), waiting)
		for _, l := range rep.lines {
			r.P.Stepf("  %s", l)
		}
	}
	return rep, nil
}

// RefusedError is a config that could not be reloaded; nothing changed.
// It lists every problem with its file:line, and is bad input when the
// config is at fault (see Unwrap).
type RefusedError struct {
	Err error
	// Warnings found on the way, said with the problems as plan says them.
	Warnings []string
}

const keptPlan = "nothing changed: the previous plan keeps running"

func (e *RefusedError) Error() string {
	var ve *config.ValidationError
	var se *config.SyntaxError
	switch {
	case errors.As(e.Err, &ve):
		var b strings.Builder
		fmt.Fprintf(&b, "%s: %d problem(s); %s:", ve.File, len(ve.Problems), keptPlan)
		for _, p := range ve.Problems {
			b.WriteString("\n  " + p.String())
		}
		warnings := slices.Clone(e.Warnings)
		for _, w := range ve.Warnings {
			if !slices.Contains(warnings, w.String()) {
				warnings = append(warnings, w.String())
			}
		}
		for _, w := range warnings {
			b.WriteString("\n  warning: " + w)
		}
		return b.String()
	case errors.As(e.Err, &se) && se.Context != "":
		return fmt.Sprintf("%v\n%s\n%s", se, se.Context, keptPlan)
	}
	return fmt.Sprintf("%v; %s", e.Err, keptPlan)
}

func (e *RefusedError) Unwrap() error { return e.Err }
