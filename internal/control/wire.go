package control

import (
	"math"
	"net/http"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/preflight"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

// The control socket's wire types: what travels as JSON between the CLI
// and a running supervisor. They are kept apart from the domain types so
// either can change without silently changing the other; `status --json`
// prints Status as is.

// Status is what `llamaboot status --json` prints.
type Status struct {
	Supervisor *SupervisorInfo  `json:"supervisor"`
	Bundle     any              `json:"bundle"`
	Instances  []InstanceStatus `json:"instances"`
	// Unsupervised are instances started by plain `run` (no supervisor),
	// read from the app dir's run record.
	Unsupervised []UnsupervisedStatus `json:"unsupervised,omitempty"`
	// Downloads are the boot's model files with their progress (absent
	// when the config gives no model by URL).
	Downloads any `json:"downloads,omitempty"`
	// Router is the router's routes, in-flight requests and last uses
	// (absent without a [router]).
	Router any `json:"router,omitempty"`
}

// SupervisorInfo describes the running supervisor.
type SupervisorInfo struct {
	PID      int      `json:"pid"`
	UptimeS  float64  `json:"uptime_s"`
	Cmd      []string `json:"cmd,omitempty"`
	CmdPID   int      `json:"cmd_pid,omitempty"`
	Socket   string   `json:"socket"`
	AppDir   string   `json:"app_dir"`
	Instance int      `json:"instance_count"`
}

// InstanceStatus is one supervised instance.
type InstanceStatus struct {
	Name       string  `json:"name"`
	State      string  `json:"state"`
	Want       string  `json:"want"` // "up" or "down"
	PID        int     `json:"pid"`
	Port       int     `json:"port"`
	URL        string  `json:"url"`
	Restarts   int     `json:"restarts"`
	UptimeS    float64 `json:"uptime_s"`
	LastExit   *string `json:"last_exit"`
	LastReason string  `json:"last_reason"` // "" while none is known: always present, as the README says
	Error      string  `json:"error,omitempty"`
	LogFile    string  `json:"log_file"`
	// Models are what a llama.cpp router-mode instance offers, each with
	// its status (loaded, loading, unloaded), read from its /models when
	// status asked; ModelsErr says why they could not be read.
	Models    []supervise.RouterModel `json:"models,omitempty"`
	ModelsErr string                  `json:"models_error,omitempty"`
	// Devices are the devices the instance's llama-server listed in its
	// log when it last started (its device_info: block), filled by
	// `status` from that log; null when no process runs or its log has
	// no such list. NoUsableGPU: it said it found no usable GPU for the
	// layers asked for, so it runs on the CPU.
	Devices     []Device `json:"devices"`
	NoUsableGPU bool     `json:"no_usable_gpu"`
	// AsksGPULayers: the instance asks for layers on a GPU (see
	// preflight.AsksGPULayers); NoUsableGPU is only said for such.
	AsksGPULayers bool `json:"asks_gpu_layers"`
}

// Device is one device a llama-server listed: "CUDA0", "NVIDIA A100
// (81920 MiB, 80000 MiB free)".
type Device struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

// UnsupervisedStatus is an instance started by plain `run`.
type UnsupervisedStatus struct {
	Name    string `json:"name"`
	PID     int    `json:"pid"`
	Alive   bool   `json:"alive"`
	Port    int    `json:"port"`
	URL     string `json:"url"`
	LogFile string `json:"log_file"`
}

// ControlRequest asks for op on one instance. The name travels in the
// body, never in the URL path, so no path cleaning can turn "a/../b"
// into "b".
type ControlRequest struct {
	Op   string `json:"op"`
	Name string `json:"name"`
	Wait bool   `json:"wait"` // answer once it is ready (or down, for stop)
}

// AdoptRequest hands instances (as `plan --json` prints them) to the
// supervisor.
type AdoptRequest struct {
	Instances []Instance `json:"instances"`
	Wait      bool       `json:"wait"`
	// Replace allows handing over an instance the supervisor already
	// runs with other settings; without it the request is refused.
	Replace bool `json:"replace,omitempty"`
}

// Reply is a successful answer: lines for the operator.
type Reply struct {
	Lines  []string `json:"lines"`
	Failed bool     `json:"failed,omitempty"` // a waited-for instance did not get there
}

// ErrorReply is a failed answer.
type ErrorReply struct {
	Error string `json:"error"`
	Code  string `json:"code"` // bad_request, unknown_instance, forbidden, shutting_down
}

// RemoteError is an ErrorReply as the client sees it.
type RemoteError struct {
	Status int
	Code   string
	Msg    string
}

func (e *RemoteError) Error() string { return "supervisor: " + e.Msg }

// BadInput is true for requests refused as malformed or naming an unknown
// instance: the CLI exits 2.
func (e *RemoteError) BadInput() bool {
	return e.Status == http.StatusBadRequest || e.Status == http.StatusNotFound
}

// Seconds is d in seconds to the millisecond, without float noise in
// JSON (1.118, not 1.1179999999999999).
func Seconds(d time.Duration) float64 {
	return math.Round(d.Seconds()*1000) / 1000
}

// wireInstance turns a snapshot into its wire form.
func wireInstance(s supervise.Snapshot, now time.Time) InstanceStatus {
	st := InstanceStatus{Name: s.Spec.Name, State: s.State.String(), Want: "down", PID: s.PID, Port: s.Spec.Port,
		URL: s.Spec.URL, Restarts: s.Restarts, LogFile: s.Spec.LogFile, Error: s.Err, AsksGPULayers: preflight.AsksGPULayers(s.Spec)}
	if s.WantUp {
		st.Want = "up"
	}
	if s.PID != 0 && !s.StartedAt.IsZero() {
		st.UptimeS = Seconds(now.Sub(s.StartedAt))
	}
	if s.LastExit != "" {
		e := s.LastExit
		st.LastExit = &e
	}
	if s.LastReason != supervise.ReasonNone {
		st.LastReason = s.LastReason.String()
	}
	return st
}

// LogsRequest asks for an instance's log (all instances', prefixed
// "[name] ", when Name is empty): the last Tail lines, then with Follow
// every new line until the instance goes away. The answer is the lines
// as text, streamed.
type LogsRequest struct {
	Name   string `json:"name"`
	Tail   int    `json:"tail"`
	Follow bool   `json:"follow"`
}

// ReloadRequest asks the supervisor to re-read its config and apply the
// difference (DryRun: only say what it would do).
type ReloadRequest struct {
	DryRun bool `json:"dry_run"`
	Wait   bool `json:"wait"` // answer once started and restarted instances are ready
}

// ReloadReply says what a reload did, by instance name.
type ReloadReply struct {
	Lines     []string `json:"lines"`
	Warnings  []string `json:"warnings,omitempty"`
	Added     []string `json:"added"`
	Changed   []string `json:"changed"`
	Removed   []string `json:"removed"`
	Unchanged []string `json:"unchanged"`
	NotReady  bool     `json:"not_ready,omitempty"` // with wait: one did not get ready
}

// Instance is an instance as `run` hands it over: what reaches the process
// and its supervision, with durations as seconds (numbers), in the JSON
// form `plan --json` prints. Positions in the config file and what only
// the config's own checks need do not travel. TestWireInstanceCarriesEverything
// fails when config.Instance gains a JSON field this one lacks.
type Instance struct {
	Name              string            `json:"name"`
	Executable        string            `json:"executable"`
	Cmd               []string          `json:"cmd"`
	LogFile           string            `json:"log_file"`
	Background        bool              `json:"background"`
	GPUIDs            *string           `json:"gpu_ids"`
	Env               map[string]string `json:"env"`
	LibDir            string            `json:"ld_library_path_prepend,omitempty"`
	Host              string            `json:"host"`
	Port              int               `json:"port"`
	URL               string            `json:"url"`
	Model             string            `json:"model,omitempty"`
	ModelSource       *ModelSource      `json:"model_source,omitempty"`
	Restart           string            `json:"restart"`
	ReadyTimeoutS     float64           `json:"ready_timeout_s"`
	StopTimeoutS      float64           `json:"stop_timeout_s"`
	LogMaxSize        int64             `json:"log_max_size"`
	LogMaxFiles       int               `json:"log_max_files"`
	LogToStdout       bool              `json:"log_to_stdout"`
	LivenessIntervalS float64           `json:"liveness_interval_s"`
	LivenessTimeoutS  float64           `json:"liveness_timeout_s"`
	DrainTimeoutS     float64           `json:"drain_timeout_s"`
	LivenessFailures  int               `json:"liveness_failures"`
	MetricsProxy      bool              `json:"metrics_proxy"`
}

// ModelSource is where a downloaded model came from (its URL redacted).
type ModelSource struct {
	Name     string   `json:"name,omitempty"`
	URL      string   `json:"url"` // redacted: the real one may carry secrets and never travels
	SHA256   []string `json:"sha256,omitempty"`
	Path     string   `json:"path"`
	Parts    int      `json:"parts"`
	TokenEnv string   `json:"token_env,omitempty"`
}

// WireInstance is in's wire form.
func WireInstance(in config.Instance) Instance {
	w := Instance{Name: in.Name, Executable: in.Executable, Cmd: in.Cmd, LogFile: in.LogFile, Background: in.Background,
		GPUIDs: in.GPUIDs, Env: in.Env, LibDir: in.LibDir, Host: in.Host, Port: in.Port, URL: in.URL, Model: in.Model,
		Restart: in.Restart, ReadyTimeoutS: in.ReadyTimeout.Seconds(), StopTimeoutS: in.StopTimeout.Seconds(),
		LogMaxSize: in.LogMaxSize, LogMaxFiles: in.LogMaxFiles, LogToStdout: in.LogToStdout,
		LivenessIntervalS: in.LivenessInterval.Seconds(), LivenessTimeoutS: in.LivenessTimeout.Seconds(), DrainTimeoutS: in.DrainTimeout.Seconds(),
		LivenessFailures: in.LivenessFailures, MetricsProxy: in.MetricsProxy}
	if m := in.ModelSource; m != nil {
		w.ModelSource = &ModelSource{Name: m.Name, URL: m.Shown, SHA256: m.SHA256, Path: m.Path, Parts: m.Parts, TokenEnv: m.TokenEnv}
	}
	return w
}

// Spec is the instance w describes, as the supervisor runs it.
func (w Instance) Spec() config.Instance {
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	in := config.Instance{Name: w.Name, Executable: w.Executable, Cmd: w.Cmd, LogFile: w.LogFile, Background: w.Background,
		GPUIDs: w.GPUIDs, Env: w.Env, LibDir: w.LibDir, Host: w.Host, Port: w.Port, URL: w.URL, Model: w.Model,
		Restart: w.Restart, ReadyTimeout: sec(w.ReadyTimeoutS), StopTimeout: sec(w.StopTimeoutS), ReadyTimeoutS: w.ReadyTimeoutS, StopTimeoutS: w.StopTimeoutS,
		LogMaxSize: w.LogMaxSize, LogMaxFiles: w.LogMaxFiles, LogToStdout: w.LogToStdout,
		LivenessInterval: sec(w.LivenessIntervalS), LivenessTimeout: sec(w.LivenessTimeoutS), DrainTimeout: sec(w.DrainTimeoutS),
		LivenessIntervalS: w.LivenessIntervalS, LivenessTimeoutS: w.LivenessTimeoutS, DrainTimeoutS: w.DrainTimeoutS,
		LivenessFailures: w.LivenessFailures, MetricsProxy: w.MetricsProxy}
	if m := w.ModelSource; m != nil {
		in.ModelSource = &config.ModelSource{Name: m.Name, Shown: m.URL, SHA256: m.SHA256, Path: m.Path, Parts: m.Parts, TokenEnv: m.TokenEnv}
	}
	return in
}
