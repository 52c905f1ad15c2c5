// Package config reads the llama.cpp instance file (TOML, the format of the
// old check-and-run-llama-cpp.sh), applies the overrides JSON, validates it
// and turns it into a plan: one llama-server command line per instance,
// identical to what the old launcher built.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/llamaboot/llamaboot/internal/logfile"
)

// Defaults for instance control keys.
const (
	DefaultLogDir       = "/tmp"
	DefaultPort         = 8080
	DefaultRestart      = "on-failure"
	DefaultReadyTimeout = 10 * time.Minute // big models load slowly
	DefaultStopTimeout  = 8 * time.Second  // stays under docker stop's 10 s
	DefaultLogMaxSize   = logfile.DefaultMaxSize
	DefaultLogMaxFiles  = logfile.DefaultMaxFiles

	// The hang watchdog and the drain on stop (0 disables each).
	DefaultLivenessInterval = 15 * time.Second
	DefaultLivenessTimeout  = 10 * time.Second
	DefaultLivenessFailures = 4
	DefaultDrainTimeout     = 5 * time.Second
)

// Options are what loading needs besides the file.
type Options struct {
	AppDir    string // where an installed bundle is looked for (default /soft/app)
	Overrides string // AUTO_INFER_LLAMA_CPP_OVERRIDES, a JSON object, or ""
	ModelsDir string // where models given by URL go (AUTO_INFER_MODELS_DIR; default <app-dir>/models)
	// Exists reports whether a path exists; tests replace it.
	Exists func(string) bool
	// ServerFlags, when set, returns the long flags ("--ctx-size") the
	// resolved llama-server accepts and what each takes; server keys it
	// lacks are refused with a did-you-mean, and a value of the wrong kind
	// (a string on a switch) is refused. An error that wraps
	// fs.ErrNotExist or exec.ErrNotFound means the executable is not here:
	// a warning.
	ServerFlags func(exe string) (Flags, error)
	// RouterKeys is AUTO_INFER_LLAMA_CPP_ROUTER_KEYS: the router's client
	// keys besides those of router.api_keys_file.
	RouterKeys string
}

// Plan is a validated config: what would be started, and how.
type Plan struct {
	File      string
	Enabled   bool // master.enable
	Instances []Instance
	Disabled  []string  // instances with enabled = false
	Warnings  []Problem // worth saying, not worth refusing
	Router    *Router   // the [router] table; nil without one

	// Executable is llama-server as resolved for every instance; where
	// master.llama_cpp_path set it (zero when it was searched for).
	Executable    string
	ExecutablePos Pos
}

// Instance is one llama-server process to start.
type Instance struct {
	Name       string            `json:"name"`
	Executable string            `json:"executable"`
	Cmd        []string          `json:"cmd"`
	LogFile    string            `json:"log_file"`
	Background bool              `json:"background"`
	GPUIDs     *string           `json:"gpu_ids"`
	Env        map[string]string `json:"env"`                               // variables set for the process
	LibDir     string            `json:"ld_library_path_prepend,omitempty"` // prepended to LD_LIBRARY_PATH
	Host       string            `json:"host"`
	Port       int               `json:"port"`
	URL        string            `json:"url"`
	Model      string            `json:"model,omitempty"`
	// ModelSource is set when the model is downloaded (Model is then its
	// local path).
	ModelSource *ModelSource `json:"model_source,omitempty"`
	// SecretEnv are the variables holding the plan's model tokens
	// (token_env): not passed to any server.
	SecretEnv []string `json:"-"`

	Restart       string        `json:"restart"`
	ReadyTimeout  time.Duration `json:"-"`
	StopTimeout   time.Duration `json:"-"`
	ReadyTimeoutS float64       `json:"ready_timeout_s"`
	StopTimeoutS  float64       `json:"stop_timeout_s"`

	// Under the supervisor: rotate the log past LogMaxSize bytes (0: never),
	// keeping LogMaxFiles files in all; copy its lines to entry's stdout.
	LogMaxSize  int64 `json:"log_max_size"`
	LogMaxFiles int   `json:"log_max_files"`
	LogToStdout bool  `json:"log_to_stdout"`
	// The hang watchdog, the drain on stop and the metrics proxy
	// (llamaboot extensions). A zero duration or count disables.
	LivenessInterval  time.Duration `json:"-"`
	LivenessTimeout   time.Duration `json:"-"`
	DrainTimeout      time.Duration `json:"-"`
	LivenessIntervalS float64       `json:"liveness_interval_s"`
	LivenessTimeoutS  float64       `json:"liveness_timeout_s"`
	DrainTimeoutS     float64       `json:"drain_timeout_s"`
	LivenessFailures  int           `json:"liveness_failures"`
	MetricsProxy      bool          `json:"metrics_proxy"`
	Routing           Routing       `json:"-"` // the router's view of it

	Pos      Pos `json:"-"`
	modelPos Pos
	// LogSetting names what sets LogFile, for errors about it: the
	// log_file or log_dir key with its line, or the default.
	LogSetting string `json:"-"`
	// Searched lists the files looked for before PATH (none when
	// master.llama_cpp_path names the executable, at ExecutablePos).
	Searched      []string `json:"-"`
	ExecutablePos Pos      `json:"-"`
}

// Same says whether two specs run the same thing: every field that
// reaches the process or its supervision, not where in the file it was
// written (positions are not part of the JSON form, which is compared).
func (in Instance) Same(other Instance) bool {
	a, err1 := json.Marshal(in)
	b, err2 := json.Marshal(other)
	return err1 == nil && err2 == nil && string(a) == string(b)
}

// Watched says whether the hang watchdog probes the instance.
func (in Instance) Watched() bool {
	return in.LivenessInterval > 0 && in.LivenessTimeout > 0 && in.LivenessFailures > 0
}

// DurationsFromJSON sets the durations from their *_s fields, which are
// what JSON carries (plan --json, instances handed to a supervisor).
func (in *Instance) DurationsFromJSON() {
	for _, d := range in.durations() {
		*d.dur = time.Duration(*d.secs * float64(time.Second))
	}
}

func (in *Instance) secondsFromDurations() {
	for _, d := range in.durations() {
		*d.secs = d.dur.Seconds()
	}
}

func (in *Instance) durations() []struct {
	dur  *time.Duration
	secs *float64
} {
	return []struct {
		dur  *time.Duration
		secs *float64
	}{
		{&in.ReadyTimeout, &in.ReadyTimeoutS}, {&in.StopTimeout, &in.StopTimeoutS},
		{&in.LivenessInterval, &in.LivenessIntervalS}, {&in.LivenessTimeout, &in.LivenessTimeoutS},
		{&in.DrainTimeout, &in.DrainTimeoutS},
	}
}

// ProbeURL is where readiness is checked: wildcard hosts are probed on
// loopback.
func (in Instance) ProbeURL() string {
	host := in.Host
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::", "[::]":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(in.Port))
}

// Load reads and plans the config file at path.
func Load(path string, o Options) (*Plan, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &FileError{Path: path, Err: err}
	}
	return Parse(path, data, o)
}

// FileError is a config file that cannot be read.
type FileError struct {
	Path string
	Err  error
}

func (e *FileError) Error() string {
	if errors.Is(e.Err, syscall.EISDIR) {
		return fmt.Sprintf("config %s is a directory, not a file; when it is a Docker -v mount, the host file did not exist when the container was created (Docker then makes an empty directory): check the host path of the mount, or --config / AUTO_INFER_LLAMA_CPP_CONFIG", e.Path)
	}
	return fmt.Sprintf("config %s cannot be read (%v); check --config / AUTO_INFER_LLAMA_CPP_CONFIG", e.Path, e.Err)
}
func (e *FileError) Unwrap() error { return e.Err }

// BadInput marks the error as the user's input at fault.
func (e *FileError) BadInput() bool { return true }

// Parse plans a config given as bytes; file names it in messages.
func Parse(file string, data []byte, o Options) (*Plan, error) {
	if o.Exists == nil {
		o.Exists = func(p string) bool { _, err := os.Stat(p); return err == nil }
	}
	if o.AppDir == "" {
		o.AppDir = "/soft/app"
	}
	if o.ModelsDir == "" {
		o.ModelsDir = filepath.Join(o.AppDir, "models")
	}
	root, err := parseTOML(file, data)
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(o.Overrides) != "" {
		ov, err := parseOverrides(o.Overrides)
		if err != nil {
			return nil, err
		}
		mergeInto(root, ov)
	}

	v := &validator{}
	v.only(root, "", topKeys)
	_, v.haveModels = root.Get("models")
	models := v.models(v.table(root, "", "models"), o.ModelsDir)
	master := v.table(root, "", "master")
	v.master(master)
	if _, ok := root.Get("instance"); !ok {
		v.problems = append(v.problems, Problem{Pos: Pos{File: file}, Key: "instance", Msg: "missing: the file needs at least one [instance.<name>.server] table"})
	}
	inst := v.table(root, "", "instance")
	gControl := v.table(inst, "instance", "control")
	gServer := v.table(inst, "instance", "server")
	v.control(gControl, "instance.control")
	v.server(gServer, "instance.server")
	serverTables := []serverTable{{gServer, "instance.server"}}

	plan := &Plan{File: file, Enabled: true, Router: v.router(root, file, o)}
	controls := map[string]*Table{}
	if e, ok := master.Get("enable"); ok {
		plan.Enabled = e != false
	}
	exe, libDir, searched := executable(master, o)
	plan.Executable, plan.ExecutablePos = exe, master.PosOf("llama_cpp_path")
	if searched != nil {
		plan.ExecutablePos = Pos{}
	}
	ports := map[int]string{}
	for _, name := range inst.Keys() {
		if name == "control" || name == "server" {
			continue
		}
		path := "instance." + name
		if !namePattern().MatchString(name) {
			v.add(inst, "instance", name, "instance name must match [A-Za-z0-9][A-Za-z0-9._-]*")
			continue
		}
		it := v.table(inst, "instance", name)
		v.only(it, path, instanceKeys)
		c := v.table(it, path, "control")
		s := v.table(it, path, "server")
		v.control(c, path+".control")
		v.server(s, path+".server")

		control := gControl.Clone()
		mergeShallow(control, c)
		if control.val("enabled") == false {
			plan.Disabled = append(plan.Disabled, name)
			continue
		}
		serverTables = append(serverTables, serverTable{s, path + ".server"})
		server := mergeServer(gServer, s)
		src := v.modelSource(name, control, server, models, v.haveModels, o.ModelsDir)
		in := build(name, control, server, exe, libDir, src)
		in.Pos, in.Searched, in.ExecutablePos = it.Pos, searched, plan.ExecutablePos
		v.routing(name, control, server, plan.Router, &in)
		controls[name] = control
		if in.MetricsProxy && !slices.Contains(in.Cmd, "--metrics") {
			v.warnings = append(v.warnings, Problem{Pos: control.PosOf("metrics_proxy"), Key: path + ".control.metrics_proxy",
				Msg: "llama-server serves /metrics only with metrics = true in its server table; until then there is nothing to proxy"})
		}
		if prev, dup := ports[in.Port]; dup && plan.Enabled {
			// Point at the line that set the port, or at the instance's own
			// table when the port is the default.
			at, how := it.Pos, fmt.Sprintf(" (no port set: %d is the default)", DefaultPort)
			if _, set := server.Get("port"); set {
				at, how = server.PosOf("port"), ""
			}
			v.problems = append(v.problems, Problem{Pos: at, Key: path + ".server.port",
				Msg: fmt.Sprintf("port %d%s is also used by instance %q; give each enabled instance its own port", in.Port, how, prev)})
		}
		ports[in.Port] = name
		plan.Instances = append(plan.Instances, in)
	}
	var tokenEnvs []string
	for _, in := range plan.Instances {
		if in.ModelSource != nil && in.ModelSource.TokenEnv != "" && !slices.Contains(tokenEnvs, in.ModelSource.TokenEnv) {
			tokenEnvs = append(tokenEnvs, in.ModelSource.TokenEnv)
		}
	}
	for i := range plan.Instances {
		plan.Instances[i].SecretEnv = tokenEnvs
	}
	v.checkModelPaths(plan)
	v.checkRoutes(plan, controls)
	// Server keys are checked whatever else is wrong: every problem at once.
	// A key the executable lacks is an error: llama-server refuses unknown
	// flags, so the instance would only crash-loop. Only when its flags
	// cannot be read is the check a warning that it was skipped.
	if o.ServerFlags != nil && plan.Enabled && len(plan.Instances) > 0 {
		v.problems = append(v.problems, checkFlags(v, plan, serverTables, o.ServerFlags)...)
	}
	sortProblems(v.problems)
	sortProblems(v.warnings)
	if len(v.problems) > 0 {
		return nil, &ValidationError{File: file, Problems: v.problems, Warnings: v.warnings}
	}
	plan.Warnings = v.warnings
	if !plan.Enabled {
		plan.Instances = nil
	}
	return plan, nil
}

// Runnable reports what stops the plan from being run here: model files
// that do not exist. Nothing should start while it returns an error.
func (p *Plan) Runnable() error {
	if missing := p.MissingModels(nil); len(missing) > 0 {
		return &ValidationError{File: p.File, Problems: missing}
	}
	return nil
}

// MissingModels lists instances whose model file does not exist here
// (for a model given by URL: not downloaded yet).
func (p *Plan) MissingModels(exists func(string) bool) []Problem {
	if exists == nil {
		exists = func(p string) bool { _, err := os.Stat(p); return err == nil }
	}
	return p.ModelProblems(func(in Instance) string {
		switch {
		case in.Model == "" || exists(in.Model):
			return ""
		case in.ModelSource != nil:
			return fmt.Sprintf("model %s is not downloaded yet to %s (instance %q); run llamaboot fetch-models, or let entry fetch it on boot", in.ModelSource.Shown, in.Model, in.Name)
		}
		return fmt.Sprintf("model file %s does not exist (instance %q)", in.Model, in.Name)
	})
}

// ModelProblems lists, at each instance's model key, what check says is
// wrong with its model ("" for nothing).
func (p *Plan) ModelProblems(check func(Instance) string) []Problem {
	var out []Problem
	for _, in := range p.Instances {
		if msg := check(in); msg != "" {
			out = append(out, Problem{Pos: in.modelPos, Key: "instance." + in.Name + ".server.model", Msg: msg})
		}
	}
	return out
}

// executable resolves llama-server: master.llama_cpp_path, then the
// installed bundle, then a llama.cpp build in the workspace, then PATH.
// searched lists the files tried before PATH, for "not found" messages.
func executable(master *Table, o Options) (exe, libDir string, searched []string) {
	if p, ok := master.Get("llama_cpp_path"); ok {
		if s, ok := p.(string); ok && s != "" {
			return s, filepath.Dir(s), nil
		}
	}
	for _, c := range []string{
		filepath.Join(o.AppDir, "llama-cpp", "bin", "llama-server"),
		"/hard/volume/workspace/llama-cpp/build/bin/llama-server",
	} {
		if o.Exists(c) {
			return c, filepath.Dir(c), nil
		}
		searched = append(searched, c)
	}
	return "llama-server", "", searched
}

func mergeShallow(dst, src *Table) {
	for _, k := range src.Keys() {
		v, _ := src.Get(k)
		dst.Set(k, v, src.PosOf(k))
	}
}

// mergeServer merges an instance's server table over the global one: a
// scalar replaces the global value in the global key's place, lists
// concatenate (global first), new keys follow in file order.
func mergeServer(global, inst *Table) *Table {
	out := global.Clone()
	for _, k := range inst.Keys() {
		v, _ := inst.Get(k)
		if gl, ok := out.val(k).([]any); ok {
			if il, ok := v.([]any); ok {
				out.Set(k, append(append([]any(nil), gl...), il...), inst.PosOf(k))
				continue
			}
		}
		out.Set(k, v, inst.PosOf(k))
	}
	return out
}

func build(name string, control, server *Table, exe, libDir string, src *ModelSource) Instance {
	in := Instance{
		Name: name, Executable: exe, LibDir: libDir, Env: map[string]string{},
		Background: true, Restart: DefaultRestart,
		ReadyTimeout: DefaultReadyTimeout, StopTimeout: DefaultStopTimeout,
		LivenessInterval: DefaultLivenessInterval, LivenessTimeout: DefaultLivenessTimeout,
		LivenessFailures: DefaultLivenessFailures, DrainTimeout: DefaultDrainTimeout,
		Host: "127.0.0.1", Port: DefaultPort,
		LogMaxSize: DefaultLogMaxSize, LogMaxFiles: DefaultLogMaxFiles,
	}
	logDir := DefaultLogDir
	in.LogSetting = fmt.Sprintf("log_dir or log_file in [instance.control] or [instance.%s.control] (log_dir defaults to %s)", name, DefaultLogDir)
	if v, ok := control.val("log_dir").(string); ok {
		logDir = v
		in.LogSetting = fmt.Sprintf("log_dir (%s) or log_file", control.PosOf("log_dir"))
	}
	in.LogFile = filepath.Join(logDir, "llama-server-"+name+".log")
	if v, ok := control.val("log_file").(string); ok {
		in.LogFile = v
		in.LogSetting = fmt.Sprintf("log_file (%s)", control.PosOf("log_file"))
	}
	if raw, ok := control.Get("log_max_size"); ok {
		in.LogMaxSize, _ = size(raw)
	}
	if v, ok := control.val("log_max_files").(int64); ok {
		in.LogMaxFiles = int(v)
	}
	if v, ok := control.val("log_to_stdout").(bool); ok {
		in.LogToStdout = v
	}
	if v, ok := control.val("background").(bool); ok {
		in.Background = v
	}
	if v, ok := control.val("gpu_ids").(string); ok {
		in.GPUIDs = &v
		switch v {
		case "all":
		case "none":
			in.Env["CUDA_VISIBLE_DEVICES"] = ""
		default:
			in.Env["CUDA_VISIBLE_DEVICES"] = v
		}
	}
	if v, ok := control.val("restart").(string); ok {
		in.Restart = v
	}
	for k, d := range map[string]*time.Duration{"ready_timeout": &in.ReadyTimeout, "stop_timeout": &in.StopTimeout,
		"liveness_interval": &in.LivenessInterval, "liveness_timeout": &in.LivenessTimeout, "drain_timeout": &in.DrainTimeout} {
		if raw, ok := control.Get(k); ok {
			*d, _ = duration(raw)
		}
	}
	if n, ok := control.val("liveness_failures").(int64); ok {
		in.LivenessFailures = int(n)
	}
	if v, ok := control.val("metrics_proxy").(bool); ok {
		in.MetricsProxy = v
	}
	in.secondsFromDurations()

	// extra_args come first, verbatim; then every key in merged order.
	if extra, ok := server.val("extra_args").([]any); ok {
		for _, a := range extra {
			in.Cmd = append(in.Cmd, scalar(a))
		}
	}
	hasPort := false
	for _, k := range server.Keys() {
		if k == "extra_args" || k == "model_sha256" {
			continue // model_sha256 is llamaboot's, not llama-server's
		}
		v, _ := server.Get(k)
		if k == "model" && src != nil {
			v = src.Path // llama-server gets the downloaded file
			in.ModelSource = src
		}
		flag := flagOf(k)
		switch x := v.(type) {
		case bool:
			if x {
				in.Cmd = append(in.Cmd, flag)
			}
		case []any:
			for _, item := range x {
				in.Cmd = append(in.Cmd, flag, scalar(item))
			}
		default:
			in.Cmd = append(in.Cmd, flag, scalar(v))
		}
		switch k {
		case "port":
			hasPort = true
			if n, ok := v.(int64); ok {
				in.Port = int(n)
			}
		case "host":
			if s, ok := v.(string); ok {
				in.Host = s
			}
		case "model":
			if s, ok := v.(string); ok {
				in.Model = s
				in.modelPos = server.PosOf(k)
			}
		}
	}
	if !hasPort {
		// llama.cpp is changing its default port; say 8080 explicitly.
		in.Cmd = append(in.Cmd, "--port", strconv.Itoa(DefaultPort))
	}
	in.URL = "http://" + net.JoinHostPort(strings.Trim(in.Host, "[]"), strconv.Itoa(in.Port))
	return in
}

// scalar renders a value as the old (Python) launcher did: str() of ints,
// repr() of floats.
func scalar(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return PyFloat(x)
	case bool:
		if x {
			return "True"
		}
		return "False"
	}
	return fmt.Sprint(v)
}

// PyFloat formats f as Python's repr(float) does: the shortest digits that
// round-trip, in positional form for exponents -4..15 (always with a
// fractional part) and as d.ddde±XX otherwise.
func PyFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case math.IsNaN(f):
		return "nan"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // e.g. "-1.2345e-05"
	mant, expStr, _ := strings.Cut(e, "e")
	exp, _ := strconv.Atoi(expStr)
	if exp < -4 || exp >= 16 {
		sign := "+"
		if exp < 0 {
			sign, exp = "-", -exp
		}
		return fmt.Sprintf("%se%s%02d", mant, sign, exp)
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(s, ".") {
		s += ".0"
	}
	return s
}

type serverTable struct {
	t    *Table
	path string
}

// checkFlags returns the server keys whose flag the plan's llama-server
// does not accept. When its flags cannot be read, it adds a warning saying
// the check was skipped and why.
// Flags are the long flags an executable accepts ("--ctx-size") and what
// each takes after it.
type Flags map[string]FlagArgs

// FlagArgs is what a flag takes after it, as --help shows.
type FlagArgs int

const (
	UnknownArgs   FlagArgs = iota // only named in a description
	Switch                        // nothing: its key is true or false
	Value                         // one value ("--ctx-size N")
	OptionalValue                 // a value or nothing ("--flash-attn [on|off|auto]")
)

func checkFlags(v *validator, plan *Plan, tables []serverTable, read func(string) (Flags, error)) []Problem {
	where := Pos{File: plan.File}
	if plan.ExecutablePos.Line > 0 {
		where = plan.ExecutablePos
	}
	flags, err := read(plan.Executable)
	if err != nil {
		reason := err.Error()
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, exec.ErrNotFound) {
			reason = fmt.Sprintf("%s does not exist here", plan.Executable)
		}
		v.warnings = append(v.warnings, Problem{Pos: where, Key: "server keys",
			Msg: fmt.Sprintf("not checked against llama-server's flags (%s)", reason)})
		return nil
	}
	keys := make([]string, 0, len(flags))
	for f := range flags {
		keys = append(keys, strings.ReplaceAll(strings.TrimPrefix(f, "--"), "-", "_"))
	}
	var unknown []Problem
	for _, st := range tables {
		for _, k := range st.t.Keys() {
			flag := flagOf(k)
			if k == "extra_args" || k == "model_sha256" || !validServerKey(k) {
				continue
			}
			if args, known := flags[flag]; known {
				if msg := argsProblem(flag, args, st.t.val(k)); msg != "" {
					unknown = append(unknown, Problem{Pos: st.t.PosOf(k), Key: st.path + "." + k, Msg: msg})
				}
				continue
			}
			hint := ""
			if s := suggest(k, keys); s != "" {
				hint = fmt.Sprintf(" (did you mean %q?)", s)
			}
			unknown = append(unknown, Problem{Pos: st.t.PosOf(k), Key: st.path + "." + k,
				Msg: fmt.Sprintf("%s has no flag %s%s", plan.Executable, flag, hint)})
		}
	}
	return unknown
}

// argsProblem says what is wrong with giving value to a flag that takes
// args ("" when nothing is): a string on a switch would become an argument
// of its own (metrics = "--api-key-file" once passed a flag), and true on a
// flag that needs a value would take the next flag as that value.
func argsProblem(flag string, args FlagArgs, value any) string {
	_, isBool := value.(bool)
	switch {
	case args == Switch && !isBool:
		return fmt.Sprintf("%s is a switch (it takes no value): give true or false, not %s", flag, describe(value))
	case args == Value && isBool:
		return fmt.Sprintf("%s takes a value (%s alone would take the next argument as its value): give the value, not %s", flag, flag, describe(value))
	}
	return ""
}

// validServerKey is a key that can be a flag name: an empty key would
// become "--", which ends llama-server's options.
func validServerKey(k string) bool { return serverKeyRE().MatchString(k) }

var serverKeyRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`) })

// flagOf is the llama-server flag a server key becomes.
func flagOf(key string) string { return "--" + strings.ReplaceAll(key, "_", "-") }
