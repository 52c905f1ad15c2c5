// Package supervise is llamaboot's PID 1 machinery: it starts llama-server
// instances and the container's command as children, reaps every zombie,
// keeps each instance in the state the operator wants (one owner goroutine
// per instance, one transition table), publishes what happens as typed
// events, and writes each instance's output to its log through a pipe.
// Operators reach it through the control socket (package control); health
// verdicts (package health) and log streaming (package logstream) are
// judged and served from its snapshots, events and logs.
package supervise

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
)

// Policy tunes restarts. Zero fields take defaults.
type Policy struct {
	BackoffMin   time.Duration // first restart delay
	BackoffMax   time.Duration // cap
	QuickCrash   time.Duration // a run shorter than this counts toward a crash loop
	CrashLoop    int           // this many quick crashes in a row → failed
	LogTailLines int
}

func (p Policy) withDefaults() Policy {
	if p.BackoffMin == 0 {
		p.BackoffMin = time.Second
	}
	if p.BackoffMax == 0 {
		p.BackoffMax = 30 * time.Second
	}
	if p.QuickCrash == 0 {
		p.QuickCrash = 10 * time.Second
	}
	if p.CrashLoop == 0 {
		p.CrashLoop = 5
	}
	if p.LogTailLines == 0 {
		p.LogTailLines = 20
	}
	return p
}

// Op is an operator's request for one instance.
type Op int

const (
	OpNone Op = iota
	OpStart
	OpStop
	OpRestart
)

var opNames = [...]string{"", "start", "stop", "restart"}

func (op Op) String() string { return opNames[op] }

func (op Op) input() input {
	return [...]input{OpStart: inStart, OpStop: inStop, OpRestart: inRestart}[op]
}

// ParseOp reads an operation name.
func ParseOp(s string) (Op, bool) {
	for op, n := range opNames {
		if n == s && op != 0 {
			return Op(op), true
		}
	}
	return OpNone, false
}

// ErrUnknownInstance is a control request for a name nobody supervises.
var ErrUnknownInstance = errors.New("no such instance")

// ErrShuttingDown refuses requests once StopAll has begun.
var ErrShuttingDown = errors.New("the supervisor is shutting down")

// Supervisor keeps a set of instances as wanted.
type Supervisor struct {
	reaper *Reaper
	deps   Deps
	policy Policy
	env    []string
	events broadcaster

	reqs atomic.Uint64 // operator requests numbered so far

	mu       sync.Mutex
	owners   map[string]*member
	order    []string // names in the order they were added, for status
	shutting bool
}

// member is the supervisor's record of one owner: the spec it was last
// given (for Apply's diff) and whether it is being removed.
type member struct {
	o        *owner
	spec     config.Instance
	removing bool
	// adopted: handed over by `run` (Upsert), not read from the config;
	// Apply leaves it alone unless the config names it.
	adopted bool
}

// New returns a supervisor that starts children through reaper with env
// as their base environment. Zero deps fields take the real thing.
func New(reaper *Reaper, policy Policy, env []string, deps Deps) *Supervisor {
	return &Supervisor{reaper: reaper, deps: deps.withDefaults(reaper, env), policy: policy.withDefaults(),
		env: env, owners: map[string]*member{}}
}

// Subscribe returns every event published from now on; call cancel when
// done. The channel closes after CloseEvents.
func (s *Supervisor) Subscribe() (<-chan Event, func()) { return s.events.Subscribe() }

// CloseEvents ends every subscription once its queued events are read.
func (s *Supervisor) CloseEvents() { s.events.close() }

// ApplyResult says what Apply did, by instance name.
type ApplyResult struct {
	Added, Changed, Unchanged, Removed []string
	// KeptDown are the changed ones the operator stopped: their new spec
	// is recorded and used at their next start; a reload does not start
	// them (they are in Changed too).
	KeptDown []string
	// Decisions are the owners' answers for the instances started or
	// changed (what to wait for, and from which event on).
	Decisions map[string]Decision
}

func (r *ApplyResult) decided(name string, d Decision) {
	if r.Decisions == nil {
		r.Decisions = map[string]Decision{}
	}
	r.Decisions[name] = d
}

// Apply makes desired the whole set of supervised instances: new names are
// started, missing ones stopped and removed, changed ones restarted with
// their new spec, unchanged ones left alone. Instances handed over by `run`
// (Upsert) are not the config's: they stay unless desired names them. Boot
// is the Apply of the first plan; reload (Reload) is the Apply of the next.
func (s *Supervisor) Apply(desired []config.Instance) (ApplyResult, error) {
	return s.apply(desired, nil)
}

// apply is Apply, with a reload's port order (see portOrder).
func (s *Supervisor) apply(desired []config.Instance, steps map[string]reloadStep) (ApplyResult, error) {
	res, err := s.upsertAgain(desired, false, ApplyResult{}, steps)
	if err != nil {
		return res, err
	}
	want := map[string]bool{}
	for _, in := range desired {
		want[in.Name] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range s.order {
		m := s.owners[name]
		if want[name] || m.removing || m.adopted {
			continue
		}
		m.removing = true
		_ = m.o.send(msg{in: inStop, end: true, remove: true})
		res.Removed = append(res.Removed, name)
		go s.forget(name, m)
	}
	return res, nil
}

// Upsert adds or updates the given instances, starts those of them that
// are down, and leaves the others alone: what `run` hands to a running
// supervisor.
func (s *Supervisor) Upsert(specs []config.Instance) (ApplyResult, error) {
	return s.upsert(specs, true)
}

// AddConfigured starts instances of the served config that were held back
// (waiting for their models): the config's, as Apply's are, so a reload
// that drops them removes them.
func (s *Supervisor) AddConfigured(specs []config.Instance) (ApplyResult, error) {
	return s.upsert(specs, false)
}

func (s *Supervisor) upsert(specs []config.Instance, startDown bool) (ApplyResult, error) {
	var res ApplyResult
	return s.upsertAgain(specs, startDown, res, nil)
}

// trimLast takes name off the end of the Unchanged and Changed lists.
func trimLast(res *ApplyResult, name string) {
	for _, l := range []*[]string{&res.Unchanged, &res.Changed} {
		if n := len(*l); n > 0 && (*l)[n-1] == name {
			*l = (*l)[:n-1]
		}
	}
}

func (s *Supervisor) upsertAgain(specs []config.Instance, startDown bool, res ApplyResult, steps map[string]reloadStep) (ApplyResult, error) {
	for i, spec := range specs {
		if _, err := ParsePolicy(spec.Restart); err != nil {
			return res, fmt.Errorf("instance %s: %w", spec.Name, err)
		}
		m, err := s.member(spec.Name)
		if err != nil {
			return res, err
		}
		if m == nil {
			reply, existing, err := s.add(spec, startDown)
			if err != nil {
				return res, err
			}
			if existing == nil {
				res.Added = append(res.Added, spec.Name)
				res.decided(spec.Name, <-reply)
				continue
			}
			m = existing // added meanwhile by another Apply or Upsert
		}
		s.mu.Lock()
		same := m.spec.Same(spec)
		if !startDown {
			m.adopted = false // the config names it now
		}
		if !same {
			m.spec = spec
		}
		s.mu.Unlock()
		sp := spec
		reply := make(chan Decision, 1)
		var mg msg
		switch {
		case same && startDown:
			// A hand-over from run: the operator's word to have it up.
			mg = msg{in: inStart, op: OpStart}
			res.Unchanged = append(res.Unchanged, spec.Name)
		case same:
			res.Unchanged = append(res.Unchanged, spec.Name)
			continue
		case startDown:
			mg = msg{in: inRestart, op: OpRestart, spec: &sp}
			res.Changed = append(res.Changed, spec.Name)
		default:
			// The config changed it: a new spec, never a new want-up. The
			// owner says whether it starts or stays down.
			mg = msg{in: inReload, spec: &sp, down: steps[spec.Name].down, gate: steps[spec.Name].gate}
			res.Changed = append(res.Changed, spec.Name)
		}
		mg.reply, mg.req = reply, s.reqs.Add(1)
		var d Decision
		answered := false
		if m.o.send(mg) == nil {
			select {
			case d = <-reply:
				answered = true
			case <-m.o.done:
			}
		}
		if !answered {
			// Removed meanwhile (a concurrent Apply): take it again as new.
			s.forget(spec.Name, m)
			trimLast(&res, spec.Name)
			return s.upsertAgain(specs[i:], startDown, res, steps)
		}
		res.decided(spec.Name, d)
		if d.Will == OutcomeKeptDown {
			res.KeptDown = append(res.KeptDown, spec.Name)
		}
	}
	return res, nil
}

// member returns the live member called name, after waiting out a removal
// in progress (its process may still hold the port).
func (s *Supervisor) member(name string) (*member, error) {
	s.mu.Lock()
	if s.shutting {
		s.mu.Unlock()
		return nil, ErrShuttingDown
	}
	m := s.owners[name]
	removing := m != nil && m.removing
	s.mu.Unlock()
	if removing {
		<-m.o.done
		s.mu.Lock()
		if s.owners[name] == m {
			s.drop(name)
		}
		s.mu.Unlock()
		return nil, nil
	}
	return m, nil
}

// add supervises spec and asks its new owner to start it; the owner's
// answer comes on the returned channel. If another caller added the name
// meanwhile, add does nothing and returns that member: one owner per name.
func (s *Supervisor) add(spec config.Instance, adopted bool) (<-chan Decision, *member, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting {
		return nil, nil, ErrShuttingDown
	}
	if m := s.owners[spec.Name]; m != nil && !m.removing {
		return nil, m, nil
	}
	if m := s.owners[spec.Name]; m != nil {
		// Still being removed: its process may hold the port. The caller
		// waits for it as member does, then adds again.
		s.mu.Unlock()
		<-m.o.done
		s.mu.Lock()
		if s.owners[spec.Name] == m {
			s.drop(spec.Name)
		}
		if s.shutting {
			return nil, nil, ErrShuttingDown
		}
		if m := s.owners[spec.Name]; m != nil {
			return nil, m, nil
		}
	}
	o := newOwner(spec, s.deps, s.policy, s.events.publish)
	s.owners[spec.Name] = &member{o: o, spec: spec, adopted: adopted}
	s.order = append(s.order, spec.Name)
	reply := make(chan Decision, 1)
	if spec.Routing.OnDemand && !adopted {
		// The router starts it (Control start) on its first request.
		reply <- Decision{Saw: Stopped, Now: Stopped, Note: "on demand: started by its first request"}
		return reply, nil, nil
	}
	return reply, nil, o.send(msg{in: inStart, req: s.reqs.Add(1), reply: reply}) // a new inbox has room
}

// forget drops a removed member once its owner has ended.
func (s *Supervisor) forget(name string, m *member) {
	<-m.o.done
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.owners[name] == m {
		s.drop(name)
	}
}

// drop deletes name; s.mu is held.
func (s *Supervisor) drop(name string) {
	delete(s.owners, name)
	for i, n := range s.order {
		if n == name {
			s.order = append(s.order[:i:i], s.order[i+1:]...)
			break
		}
	}
}

// Control asks an instance's owner for op and returns its answer: the
// state it saw, what it decided, and where in the instance's events the
// request's consequences begin (events with a higher Seq). Subscribe
// before calling to follow them.
func (s *Supervisor) Control(name string, op Op) (Decision, error) {
	s.mu.Lock()
	m, shutting := s.owners[name], s.shutting
	removing := m != nil && m.removing
	s.mu.Unlock()
	switch {
	case shutting:
		return Decision{}, ErrShuttingDown
	case m == nil || removing:
		return Decision{}, fmt.Errorf("%w %q", ErrUnknownInstance, name)
	}
	reply := make(chan Decision, 1)
	if err := m.o.send(msg{in: op.input(), op: op, req: s.reqs.Add(1), reply: reply}); err != nil {
		return Decision{}, fmt.Errorf("%w %q", ErrUnknownInstance, name)
	}
	select {
	case d := <-reply:
		return d, nil
	case <-m.o.done:
		return Decision{}, fmt.Errorf("%w %q", ErrUnknownInstance, name)
	}
}

// Snapshots reports every instance, in the order they were added.
func (s *Supervisor) Snapshots() []Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Snapshot, 0, len(s.order))
	for _, n := range s.order {
		if o := s.owners[n].o; !o.gone.Load() {
			out = append(out, o.snapshot())
		}
	}
	return out
}

// Spec returns the spec last given for name.
func (s *Supervisor) Spec(name string) (config.Instance, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.owners[name]
	if m == nil {
		return config.Instance{}, false
	}
	return m.spec, true
}

// StopAll stops every instance in parallel (SIGTERM to each group, SIGKILL
// after the smaller of grace and its stop_timeout) and returns when every
// owner has ended. No instance starts after it is called.
func (s *Supervisor) StopAll(grace time.Duration) {
	s.mu.Lock()
	s.shutting = true
	var owners []*owner
	for _, m := range s.owners {
		owners = append(owners, m.o)
	}
	s.mu.Unlock()
	for _, o := range owners {
		_ = o.send(msg{in: inStop, end: true, grace: grace})
	}
	for _, o := range owners {
		<-o.done
	}
}

// StartCmd starts the container's command as a child in our process group
// (so a terminal's Ctrl-C reaches it as well).
func (s *Supervisor) StartCmd(argv []string) (*exec.Cmd, <-chan syscall.WaitStatus, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = s.env
	ch, err := s.reaper.Start(cmd)
	return cmd, ch, err
}
