package router

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http/httputil"
	"slices"
	"sync"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
)

// Target is one instance as the router reaches it.
type Target struct {
	Name        string
	URL         string // http://host:port as probed (wildcard hosts on loopback)
	APIKey      string // the server's own key, added by the router
	Aliases     []string
	OnDemand    bool
	IdleTimeout time.Duration
	Group       string
	RouterMode  bool // llama.cpp's router mode: routed the names its /models lists

	stripKeys bool // its table has client keys: they are not passed on
	once      sync.Once
	rp        *httputil.ReverseProxy // made on first use (proxy.reverseProxy)
}

// Table is one routing table: a reload builds a new one and swaps it in
// whole, so a request is routed by the table it arrived under.
type Table struct {
	Listen   string
	MaxWait  time.Duration
	MaxQueue int
	Groups   map[string]int // max_loaded by group

	targets map[string]*Target // by instance name
	order   []string           // instance names, in config order
	names   map[string]string  // routed name (instance or alias) → instance
	keys    [][32]byte         // SHA-256 of each client key
}

// NewTable builds the table of a config's [router] and instances.
func NewTable(r *config.Router, instances []config.Instance) *Table {
	t := &Table{Listen: r.Listen, MaxWait: r.MaxWait, MaxQueue: r.MaxQueue, Groups: r.Groups,
		targets: map[string]*Target{}, names: map[string]string{}}
	for _, in := range instances {
		rt := in.Routing
		t.add(&Target{Name: in.Name, URL: in.ProbeURL(), APIKey: rt.APIKey, Aliases: rt.Aliases,
			OnDemand: rt.OnDemand, IdleTimeout: rt.IdleTimeout, Group: rt.Group, RouterMode: rt.RouterMode})
	}
	for _, k := range r.Keys {
		t.keys = append(t.keys, sha256.Sum256([]byte(k)))
	}
	for _, tg := range t.targets {
		tg.stripKeys = t.KeyRequired()
	}
	return t
}

func (t *Table) add(tg *Target) {
	t.targets[tg.Name] = tg
	t.order = append(t.order, tg.Name)
	for _, n := range append([]string{tg.Name}, tg.Aliases...) {
		if _, taken := t.names[n]; !taken {
			t.names[n] = tg.Name
		}
	}
}

// Target returns the instance a routed name (instance or alias) names.
func (t *Table) Target(name string) (*Target, bool) {
	inst, ok := t.names[name]
	if !ok {
		return nil, false
	}
	return t.targets[inst], true
}

// Names are every configured routed name, instances in config order each
// followed by its aliases.
func (t *Table) Names() []string {
	var out []string
	for _, n := range t.order {
		out = append(out, n)
		out = append(out, t.targets[n].Aliases...)
	}
	return out
}

// Targets are the instances, in config order.
func (t *Table) Targets() []*Target {
	out := make([]*Target, len(t.order))
	for i, n := range t.order {
		out[i] = t.targets[n]
	}
	return out
}

// KeyRequired says whether clients must present a key.
func (t *Table) KeyRequired() bool { return len(t.keys) > 0 }

// Allowed says whether key is one of the clients' keys, in time that does
// not depend on how much of it matches.
func (t *Table) Allowed(key string) bool {
	sum := sha256.Sum256([]byte(key))
	ok := 0
	for _, k := range t.keys {
		ok |= subtle.ConstantTimeCompare(sum[:], k[:])
	}
	return ok == 1
}

// routerModes are the instances in llama.cpp's router mode.
func (t *Table) routerModes() []*Target {
	return slices.DeleteFunc(t.Targets(), func(tg *Target) bool { return !tg.RouterMode })
}
