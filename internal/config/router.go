package config

import (
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Router defaults.
const (
	DefaultRouterMaxWait  = 10 * time.Minute
	DefaultRouterMaxQueue = 100
)

// Router is the [router] table: one OpenAI-compatible endpoint in front of
// the instances (nil in a Plan without one).
type Router struct {
	Listen      string         `json:"listen"`
	APIKeysFile string         `json:"api_keys_file,omitempty"` // as resolved (relative to the config's directory)
	MaxWait     time.Duration  `json:"-"`
	MaxQueue    int            `json:"max_queue"`
	Groups      map[string]int `json:"groups,omitempty"` // [router.group.NAME] max_loaded
	// Keys are the clients' API keys (api_keys_file, then
	// AUTO_INFER_LLAMA_CPP_ROUTER_KEYS); none: no key is asked for. Never
	// printed.
	Keys     []string `json:"-"`
	Pos      Pos      `json:"-"` // of listen (of [router] when it is missing)
	groupPos map[string]Pos
}

// Routing is how the router reaches one instance: its
// [instance.NAME.control] router keys and what its server table says.
// It is not part of the instance's JSON, so a change here changes the
// routes without restarting the server.
type Routing struct {
	Aliases     []string      // names it answers to besides its own
	OnDemand    bool          // started by the first request, not at boot
	IdleTimeout time.Duration // stopped after this long without requests (0: never)
	Group       string        // [router.group.NAME] it counts against
	// RouterMode: llama-server runs llama.cpp's own router (models_dir): it
	// is routed the names its /models lists, and loads them itself.
	RouterMode bool
	APIKey     string // the server's own --api-key, added by the router
}

// routerKeys are the keys of [router]; routingKeys are the router's keys
// in a control table.
var (
	routerKeys  = []string{"listen", "api_keys_file", "max_wait", "max_queue", "group"}
	groupKeys   = []string{"max_loaded"}
	routingKeys = []string{"aliases", "on_demand", "idle_timeout", "group"}
)

// router validates [router] and returns it (nil when the file has none).
func (v *validator) router(root *Table, file string, o Options) *Router {
	if _, ok := root.Get("router"); !ok {
		return nil
	}
	t := v.table(root, "", "router")
	v.only(t, "router", routerKeys)
	r := &Router{MaxWait: DefaultRouterMaxWait, MaxQueue: DefaultRouterMaxQueue, Groups: map[string]int{}, Pos: t.PosOf("listen"), groupPos: map[string]Pos{}}
	switch raw, ok := t.Get("listen"); {
	case !ok:
		v.problems = append(v.problems, Problem{Pos: t.Pos, Key: "router.listen", Msg: `missing: say where the router listens, e.g. listen = "127.0.0.1:8000"`})
	default:
		s, _ := raw.(string)
		host, port, err := net.SplitHostPort(s)
		n, perr := strconv.Atoi(port)
		if err != nil || perr != nil || n < 1 || n > 65535 || strings.ContainsAny(host, " /") {
			v.add(t, "router", "listen", `must be "HOST:PORT" such as "127.0.0.1:8000" or ":8000", not %s`, describe(raw))
		}
		r.Listen = s
	}
	if raw, ok := t.Get("api_keys_file"); ok {
		s, _ := raw.(string)
		if s == "" {
			v.add(t, "router", "api_keys_file", "must be the path of a file with one key a line, not %s", describe(raw))
		} else {
			if !filepath.IsAbs(s) {
				s = filepath.Join(filepath.Dir(file), s)
			}
			r.APIKeysFile = s
			keys, err := readKeys(s)
			switch {
			case err != nil:
				v.add(t, "router", "api_keys_file", "cannot read %s: %v", s, err)
			case len(keys) == 0:
				v.add(t, "router", "api_keys_file", "%s holds no key (one a line; # starts a comment): the router would be open to anyone; add keys or remove api_keys_file", s)
			}
			r.Keys = keys
		}
	}
	r.Keys = append(r.Keys, splitKeys(o.RouterKeys)...)
	if raw, ok := t.Get("max_wait"); ok {
		d, err := duration(raw)
		if err == nil && d == 0 {
			err = fmt.Errorf("must be more than 0 (how long a request waits for its model to start)")
		}
		if err != nil {
			v.add(t, "router", "max_wait", "%v", err)
		}
		r.MaxWait = d
	}
	if raw, ok := t.Get("max_queue"); ok {
		n, ok := raw.(int64)
		if !ok || n < 0 || n > 1<<20 {
			v.add(t, "router", "max_queue", "must be an integer from 0 to %d (requests that may wait for each instance to start; 0: none wait), not %s", 1<<20, describe(raw))
		}
		r.MaxQueue = int(n)
	}
	groups := v.table(t, "router", "group")
	for _, name := range groups.Keys() {
		path := "router.group." + name
		if !namePattern().MatchString(name) {
			v.add(groups, "router.group", name, "group name must match [A-Za-z0-9][A-Za-z0-9._-]*")
			continue
		}
		g := v.table(groups, "router.group", name)
		v.only(g, path, groupKeys)
		raw, ok := g.Get("max_loaded")
		n, isInt := raw.(int64)
		switch {
		case !ok:
			v.problems = append(v.problems, Problem{Pos: g.Pos, Key: path + ".max_loaded", Msg: "missing: how many of the group's instances may run at once"})
		case !isInt || n < 1 || n > 1<<16:
			v.add(g, path, "max_loaded", "must be an integer ≥ 1, not %s", describe(raw))
		default:
			r.Groups[name] = int(n)
			r.groupPos[name] = g.PosOf("max_loaded")
		}
	}
	return r
}

// readKeys reads an api_keys_file: one key a line, blank lines and lines
// starting with # skipped.
func readKeys(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys []string
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			keys = append(keys, line)
		}
	}
	return keys, nil
}

// splitKeys reads AUTO_INFER_LLAMA_CPP_ROUTER_KEYS: keys separated by
// commas, spaces or newlines.
func splitKeys(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' || r == '\r' })
}

// routingControl checks the router's keys of one control table.
func (v *validator) routingControl(c *Table, path string) {
	v.boolean(c, path, "on_demand")
	v.str(c, path, "group", true)
	if raw, ok := c.Get("idle_timeout"); ok {
		if _, err := duration(raw); err != nil {
			v.add(c, path, "idle_timeout", "%v", err)
		}
	}
	if raw, ok := c.Get("aliases"); ok {
		list, ok := raw.([]any)
		if !ok {
			v.add(c, path, "aliases", `must be a list of names, e.g. aliases = ["gpt-4o-mini"], not %s`, describe(raw))
			return
		}
		for i, item := range list {
			if s, ok := item.(string); !ok || s == "" || strings.ContainsAny(s, " \t\n") {
				v.add(c, path, "aliases", "item %d must be a name without spaces, not %s", i+1, describe(item))
			}
		}
	}
}

// routing builds an instance's Routing from its merged control table and
// checks it against the router: keys that need a [router], groups that
// must exist, and llama.cpp's router mode (which loads models itself).
func (v *validator) routing(name string, control, server *Table, r *Router, in *Instance) {
	path := "instance." + name + ".control"
	rt := Routing{}
	if list, ok := control.val("aliases").([]any); ok {
		for _, a := range list {
			if s, ok := a.(string); ok {
				rt.Aliases = append(rt.Aliases, s)
			}
		}
	}
	rt.OnDemand, _ = control.val("on_demand").(bool)
	if raw, ok := control.Get("idle_timeout"); ok {
		rt.IdleTimeout, _ = duration(raw)
	}
	rt.Group, _ = control.val("group").(string)
	_, rt.RouterMode = server.Get("models_dir")
	if k, ok := server.val("api_key").(string); ok {
		rt.APIKey = k
	}
	in.Routing = rt
	for _, k := range routingKeys {
		if _, set := control.Get(k); set && r == nil {
			v.problems = append(v.problems, Problem{Pos: control.PosOf(k), Key: path + "." + k,
				Msg: "applies only with a [router] table (router.listen): without one nothing routes to the instance"})
		}
	}
	if r == nil {
		return
	}
	if rt.Group != "" {
		if _, ok := r.Groups[rt.Group]; !ok {
			names := make([]string, 0, len(r.Groups))
			for g := range r.Groups {
				names = append(names, g)
			}
			hint := ""
			if s := suggest(rt.Group, names); s != "" {
				hint = fmt.Sprintf(" (did you mean %q?)", s)
			}
			v.problems = append(v.problems, Problem{Pos: control.PosOf("group"), Key: path + ".group",
				Msg: fmt.Sprintf("%q names no [router.group.%s] table%s", rt.Group, rt.Group, hint)})
		}
	}
	if rt.OnDemand && rt.RouterMode {
		v.problems = append(v.problems, Problem{Pos: control.PosOf("on_demand"), Key: path + ".on_demand",
			Msg: "an instance in llama.cpp's router mode (models_dir) is routed the names its /models lists, known only while it runs: start it at boot (on_demand = false); it holds no model until a request asks for one, loads each itself and keeps at most models_max"})
	}
}

// checkRoutes refuses a name (instance or alias) that two instances
// answer to, and a router listening on an instance's port.
func (v *validator) checkRoutes(plan *Plan, controls map[string]*Table) {
	r := plan.Router
	if r == nil {
		return
	}
	owner := map[string]string{}
	for _, in := range plan.Instances {
		owner[in.Name] = in.Name
	}
	for _, in := range plan.Instances {
		c := controls[in.Name]
		for _, a := range in.Routing.Aliases {
			if prev, dup := owner[a]; dup {
				what := fmt.Sprintf("an alias of instance %q", prev)
				if prev == a {
					what = "an instance's name"
				}
				if prev == in.Name {
					what = "already one of its names"
				}
				v.problems = append(v.problems, Problem{Pos: c.PosOf("aliases"), Key: "instance." + in.Name + ".control.aliases",
					Msg: fmt.Sprintf("%q is %s; each name routes to one instance", a, what)})
				continue
			}
			owner[a] = in.Name
		}
	}
	// A group's members that start at boot must fit in it.
	atBoot := map[string][]string{}
	for _, in := range plan.Instances {
		if g := in.Routing.Group; g != "" && !in.Routing.OnDemand {
			atBoot[g] = append(atBoot[g], in.Name)
		}
	}
	for _, g := range slices.Sorted(maps.Keys(atBoot)) {
		if max, ok := r.Groups[g]; ok && len(atBoot[g]) > max {
			v.problems = append(v.problems, Problem{Pos: r.groupPos[g], Key: "router.group." + g + ".max_loaded",
				Msg: fmt.Sprintf("%d of the group's instances start at boot (%s) but at most %d may run at once; set on_demand = true on some, or raise max_loaded", len(atBoot[g]), strings.Join(atBoot[g], ", "), max)})
		}
	}
	if _, port, err := net.SplitHostPort(r.Listen); err == nil {
		for _, in := range plan.Instances {
			if strconv.Itoa(in.Port) == port && sameHost(r.Listen, in.Host) {
				v.problems = append(v.problems, Problem{Pos: r.Pos, Key: "router.listen",
					Msg: fmt.Sprintf("port %s is also instance %q's port; give the router its own", port, in.Name)})
			}
		}
	}
}

// sameHost says whether a listen address and an instance's host could
// collide on one port (a wildcard collides with everything).
func sameHost(listen, host string) bool {
	h, _, _ := net.SplitHostPort(listen)
	wild := []string{"", "0.0.0.0", "::", "[::]"}
	return slices.Contains(wild, h) || slices.Contains(wild, host) || strings.Trim(h, "[]") == strings.Trim(host, "[]")
}

// RoutedNames are the names the instance answers to at the router: its
// own, then its aliases.
func (in Instance) RoutedNames() []string {
	return append([]string{in.Name}, in.Routing.Aliases...)
}
