// Package supervise is llamaboot's PID 1 machinery: it starts llama-server
// instances and the container's command as children, reaps every zombie,
// keeps each instance in the state the operator wants (one owner goroutine
// per instance, one transition table), publishes what happens as typed
// events, writes each instance's output to its log through a pipe, and
// answers status and control requests on a unix socket.
package supervise

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
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
type Op string

const (
	OpStart   Op = "start"
	OpStop    Op = "stop"
	OpRestart Op = "restart"
)

// ParseOp reads an operation name.
func ParseOp(s string) (Op, bool) {
	switch op := Op(s); op {
	case OpStart, OpStop, OpRestart:
		return op, true
	}
	return "", false
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
}

// Apply makes desired the whole set of supervised instances: new names are
// started, missing ones stopped and removed, changed ones restarted with
// their new spec, unchanged ones left alone. Instances handed over by `run`
// (Upsert) are not the config's: they stay unless desired names them. Boot
// is the Apply of the first plan; reload (Reload) is the Apply of the next.
func (s *Supervisor) Apply(desired []config.Instance) (ApplyResult, error) {
	res, err := s.upsert(desired, false)
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
	for _, spec := range specs {
		m, err := s.member(spec.Name)
		if err != nil {
			return res, err
		}
		if m != nil && !startDown {
			s.mu.Lock()
			m.adopted = false // the config names it now
			s.mu.Unlock()
		}
		switch {
		case m == nil:
			if err := s.add(spec, startDown); err != nil {
				return res, err
			}
			res.Added = append(res.Added, spec.Name)
		case sameSpec(m.spec, spec):
			if startDown {
				// Ignored by a running instance; starts a stopped or failed one.
				if err := m.o.send(msg{in: inStart}); err != nil {
					return res, err
				}
			}
			res.Unchanged = append(res.Unchanged, spec.Name)
		default:
			s.mu.Lock()
			m.spec = spec
			s.mu.Unlock()
			sp := spec
			// An on-demand instance that is down takes the new spec and
			// stays down until a request comes.
			if err := m.o.send(msg{in: inRestart, spec: &sp, lazy: spec.Routing.OnDemand}); err != nil {
				return res, err
			}
			res.Changed = append(res.Changed, spec.Name)
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
	s.mu.Unlock()
	if m != nil && m.removing {
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

func (s *Supervisor) add(spec config.Instance, adopted bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting {
		return ErrShuttingDown
	}
	o := newOwner(spec, s.deps, s.policy, s.events.publish)
	s.owners[spec.Name] = &member{o: o, spec: spec, adopted: adopted}
	s.order = append(s.order, spec.Name)
	if spec.Routing.OnDemand && !adopted {
		return nil // the router starts it (Control start) on its first request
	}
	return o.send(msg{in: inStart})
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

// sameSpec compares what an instance runs, ignoring where in the file it
// was written (positions are not part of the JSON form).
func sameSpec(a, b config.Instance) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

// Control asks an instance's owner for op.
func (s *Supervisor) Control(name string, op Op) error {
	s.mu.Lock()
	m, shutting := s.owners[name], s.shutting
	s.mu.Unlock()
	switch {
	case shutting:
		return ErrShuttingDown
	case m == nil || m.removing:
		return fmt.Errorf("%w %q", ErrUnknownInstance, name)
	}
	in := map[Op]input{OpStart: inStart, OpStop: inStop, OpRestart: inRestart}[op]
	return m.o.send(msg{in: in, op: string(op)})
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
