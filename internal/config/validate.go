package config

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/llamaboot/llamaboot/internal/bytesize"
	"github.com/llamaboot/llamaboot/internal/fetch"
)

// Problem is one thing wrong with the file, at a place.
type Problem struct {
	Pos Pos
	Key string // dotted path, e.g. instance.qwen.server.port
	Msg string
}

func (p Problem) String() string { return fmt.Sprintf("%s: %s: %s", p.Pos, p.Key, p.Msg) }

// ValidationError lists every problem found in a config, so users fix them
// in one go.
type ValidationError struct {
	File     string
	Problems []Problem
	// Warnings found alongside (a misspelt server key without STRICT):
	// said with the problems, so nothing waits for a second round.
	Warnings []Problem
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problem(s); nothing was started:", e.File, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	for _, p := range e.Warnings {
		b.WriteString("\n  warning: ")
		b.WriteString(p.String())
	}
	return b.String()
}

// sortProblems orders problems by file and line, as a reader goes.
func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].Pos.File != ps[j].Pos.File {
			return ps[i].Pos.File < ps[j].Pos.File
		}
		return ps[i].Pos.Line < ps[j].Pos.Line
	})
}

// BadInput marks the error as the user's input at fault.
func (e *ValidationError) BadInput() bool { return true }

var (
	namePattern   = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`) })
	gpuIDsPattern = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^(all|none|\d+(,\d+)*)$`) })
)

var (
	topKeys     = []string{"master", "instance", "models", "router"}
	masterKeys  = []string{"enable", "llama_cpp_path"}
	controlKeys = []string{"log_dir", "log_file", "background", "enabled", "gpu_ids",
		// llamaboot extensions: supervision policy.
		"restart", "ready_timeout", "stop_timeout", "model_sha256",
		// llamaboot extensions: instance logs under the supervisor.
		"log_max_size", "log_max_files", "log_to_stdout",
		// llamaboot extensions: the hang watchdog, the drain on stop, metrics.
		"liveness_interval", "liveness_timeout", "liveness_failures", "drain_timeout", "metrics_proxy",
		// llamaboot extensions: the router.
		"aliases", "on_demand", "idle_timeout", "group"}
	instanceKeys  = []string{"control", "server"}
	restartPolicy = []string{"on-failure", "always", "never"}
)

type validator struct {
	problems []Problem
	warnings []Problem
	// haveModels: the file has [models.*] tables, so model = "models.NAME"
	// is a reference to one.
	haveModels bool
}

func (v *validator) add(t *Table, path, key, format string, args ...any) {
	full := key
	if path != "" {
		full = path + "." + key
	}
	v.problems = append(v.problems, Problem{Pos: t.PosOf(key), Key: full, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) warn(t *Table, path, key, format string, args ...any) {
	v.warnings = append(v.warnings, Problem{Pos: t.PosOf(key), Key: path + "." + key, Msg: fmt.Sprintf(format, args...)})
}

// only reports keys of t outside allowed, with a did-you-mean hint.
func (v *validator) only(t *Table, path string, allowed []string) {
	for _, k := range t.Keys() {
		if slices.Contains(allowed, k) {
			continue
		}
		hint := ""
		if s := suggest(k, allowed); s != "" {
			hint = fmt.Sprintf(" (did you mean %q?)", s)
		}
		where := "[" + path + "]"
		if path == "" {
			where = "the top level"
		}
		v.add(t, path, k, "unknown key in %s%s; allowed: %s", where, hint, strings.Join(allowed, ", "))
	}
}

// table returns t[key] as a table, reporting a wrong type. A missing key
// gives an empty table.
func (v *validator) table(t *Table, path, key string) *Table {
	raw, ok := t.Get(key)
	if !ok {
		return newTable(t.Pos)
	}
	sub, ok := raw.(*Table)
	if !ok {
		v.add(t, path, key, "must be a table ([%s]), not %s", join(path, key), typeName(raw))
		return newTable(t.PosOf(key))
	}
	return sub
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (v *validator) boolean(t *Table, path, key string) {
	if raw, ok := t.Get(key); ok {
		if _, ok := raw.(bool); !ok {
			v.add(t, path, key, "must be true or false, not %s", describe(raw))
		}
	}
}

func (v *validator) str(t *Table, path, key string, nonEmpty bool) {
	raw, ok := t.Get(key)
	if !ok {
		return
	}
	s, ok := raw.(string)
	if !ok {
		v.add(t, path, key, "must be a string, not %s", describe(raw))
		return
	}
	if nonEmpty && s == "" {
		v.add(t, path, key, "must not be empty")
	}
}

func (v *validator) master(m *Table) {
	v.only(m, "master", masterKeys)
	v.boolean(m, "master", "enable")
	v.str(m, "master", "llama_cpp_path", true)
}

func (v *validator) control(c *Table, path string) {
	v.only(c, path, controlKeys)
	v.str(c, path, "log_dir", true)
	v.str(c, path, "log_file", true)
	v.boolean(c, path, "background")
	v.boolean(c, path, "enabled")
	v.boolean(c, path, "log_to_stdout")
	if raw, ok := c.Get("log_max_size"); ok {
		if _, err := size(raw); err != nil {
			v.add(c, path, "log_max_size", "%v", err)
		}
	}
	if raw, ok := c.Get("log_max_files"); ok {
		if n, ok := raw.(int64); !ok || n < 1 || n > maxLogFiles {
			v.add(c, path, "log_max_files", "must be an integer from 1 to %d (the live file counts: 1 keeps no older file), not %s", maxLogFiles, describe(raw))
		}
	}
	if raw, ok := c.Get("gpu_ids"); ok {
		switch x := raw.(type) {
		case string:
			if !gpuIDsPattern().MatchString(x) {
				v.add(c, path, "gpu_ids", `%q is not "all", "none" or a comma-separated list of GPU indices such as "0,1"`, x)
			}
		case int64:
			v.add(c, path, "gpu_ids", `must be a string: write gpu_ids = "%d"`, x)
		default:
			v.add(c, path, "gpu_ids", `must be a string such as "0,1", "all" or "none", not %s`, describe(raw))
		}
	}
	if raw, ok := c.Get("restart"); ok {
		if s, ok := raw.(string); !ok || !slices.Contains(restartPolicy, s) {
			v.add(c, path, "restart", "must be one of %q, not %s", restartPolicy, describe(raw))
		}
	}
	v.boolean(c, path, "metrics_proxy")
	v.routingControl(c, path)
	if raw, ok := c.Get("liveness_failures"); ok {
		if n, ok := raw.(int64); !ok || n < 0 {
			v.add(c, path, "liveness_failures", "must be an integer ≥ 0 (0 turns the hang watchdog off), not %s", describe(raw))
		}
	}
	for _, k := range []string{"ready_timeout", "stop_timeout", "liveness_interval", "liveness_timeout", "drain_timeout"} {
		if raw, ok := c.Get(k); ok {
			if _, err := duration(raw); err != nil {
				v.add(c, path, k, "%v", err)
			}
		}
	}
}

// duration reads a timeout: a Go duration string ("90s", "10m") or seconds.
func duration(raw any) (time.Duration, error) {
	switch x := raw.(type) {
	case int64:
		if x >= 0 {
			return time.Duration(x) * time.Second, nil
		}
	case float64:
		if x >= 0 {
			return time.Duration(x * float64(time.Second)), nil
		}
	case string:
		d, err := time.ParseDuration(x)
		if err == nil && d >= 0 {
			return d, nil
		}
	}
	return 0, fmt.Errorf(`must be a duration such as "90s" or "10m", or a number of seconds, not %s`, describe(raw))
}

// size reads a byte count: a number of bytes or a string with a unit
// ("100MiB", "1GB"). 0 turns rotation off.
func size(raw any) (int64, error) {
	switch x := raw.(type) {
	case int64:
		if x >= 0 {
			return x, nil
		}
	case string:
		if n, err := bytesize.Parse(x); err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf(`must be a size such as "100MiB" or "1GB", or a number of bytes (0: never rotate), not %s`, describe(raw))
}

// maxLogFiles bounds log_max_files: rotation renames every kept file.
const maxLogFiles = 1000

// intRange names server keys whose integer values have a floor (and ceiling).
var intRange = map[string][2]int64{
	"port":         {1, 65535},
	"ctx_size":     {0, 1<<63 - 1},
	"n_predict":    {-1, 1<<63 - 1},
	"n_gpu_layers": {-1, 1<<63 - 1},
}

func (v *validator) server(s *Table, path string) {
	for _, k := range s.Keys() {
		raw, _ := s.Get(k)
		if !validServerKey(k) {
			v.add(s, path, k, "is not a flag name (%q would be passed as %q): server keys are letters, digits, '_' and '-'", k, "--"+strings.ReplaceAll(k, "_", "-"))
			continue
		}
		switch x := raw.(type) {
		case *Table:
			v.add(s, path, k, "nested tables are not allowed in a server table; write the flag as %s = value", k)
			continue
		case []any:
			for i, item := range x {
				switch item.(type) {
				case string, int64, float64:
				default:
					v.add(s, path, k, "item %d must be a string or a number, not %s", i+1, describe(item))
				}
			}
		case string, int64, float64, bool:
		default:
			v.add(s, path, k, "%s cannot be passed to llama-server; use a string, number, boolean or list", describe(raw))
			continue
		}
		if k == "extra_args" {
			list, ok := raw.([]any)
			if !ok {
				v.add(s, path, k, `must be a list of strings, e.g. extra_args = ["--verbose"]`)
				continue
			}
			for i, item := range list {
				if _, ok := item.(string); !ok {
					v.add(s, path, k, "item %d must be a string, not %s", i+1, describe(item))
				}
			}
		}
		if r, ok := intRange[k]; ok {
			n, isInt := raw.(int64)
			if k == "n_gpu_layers" && (raw == "auto" || raw == "all") {
				continue
			}
			if !isInt || n < r[0] || n > r[1] {
				if r[1] == 1<<63-1 {
					v.add(s, path, k, "must be an integer ≥ %d, not %s", r[0], describe(raw))
				} else {
					v.add(s, path, k, "must be an integer from %d to %d, not %s", r[0], r[1], describe(raw))
				}
			}
		}
		switch k {
		case "flash_attn":
			switch raw {
			case "on", "off", "auto":
			case true:
				v.add(s, path, k, `must be "on", "off" or "auto" (llama-server needs a value): write flash_attn = "on"`)
			case false:
				v.add(s, path, k, `must be "on", "off" or "auto" (llama-server needs a value): write flash_attn = "off"`)
			default:
				v.add(s, path, k, `must be "on", "off" or "auto", not %s`, describe(raw))
			}
		case "model":
			m, ok := raw.(string)
			if !ok || m == "" {
				v.add(s, path, k, "must be the path of a .gguf file, not %s", describe(raw))
			} else if fetch.IsURL(m) || isModelRef(m, v.haveModels) {
				// checked with the model sources
			} else if !strings.HasSuffix(strings.ToLower(m), ".gguf") {
				v.warn(s, path, k, "%q does not end in .gguf", m)
			} else if shardRE().MatchString(m) && !firstShardRE().MatchString(m) {
				v.warn(s, path, k, "%q is not the first shard; llama-server expects the -00001-of-N file", m)
			}
		}
	}
}

var (
	shardRE      = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`-\d{5}-of-\d{5}\.gguf$`) })
	firstShardRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`-00001-of-\d{5}\.gguf$`) })
)

func typeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "a list"
	case *Table:
		return "a table"
	}
	return fmt.Sprintf("a %T", v)
}

// describe shows a value and its type for error messages.
func describe(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("the string %q", x)
	case int64, float64, bool:
		return fmt.Sprintf("%s %v", typeName(v), x)
	}
	return typeName(v)
}

// suggest returns the allowed key closest to k, if it is close enough to be
// a typo.
func suggest(k string, allowed []string) string {
	best, bestD := "", 3
	cands := append([]string(nil), allowed...)
	sort.Strings(cands)
	for _, a := range cands {
		d := levenshtein(k, a)
		if strings.HasPrefix(a, k) || strings.HasPrefix(k, a) {
			d = min(d, 1)
		}
		if d < bestD {
			best, bestD = a, d
		}
	}
	return best
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
