package control

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
)

// jsonFields lists the JSON names of t's fields.
func jsonFields(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "-" && f.IsExported() {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// The wire form of a handed-over instance carries every field of the
// config's JSON form (what `plan --json` prints and `run` once sent as is):
// a field added to config.Instance and not here would be lost on the way
// to the supervisor without this test failing.
func TestWireInstanceCarriesEverything(t *testing.T) {
	if got, want := jsonFields(reflect.TypeOf(Instance{})), jsonFields(reflect.TypeOf(config.Instance{})); !slices.Equal(got, want) {
		t.Errorf("wire fields %v\nconfig fields %v", got, want)
	}
	if got, want := jsonFields(reflect.TypeOf(ModelSource{})), jsonFields(reflect.TypeOf(config.ModelSource{})); !slices.Equal(got, want) {
		t.Errorf("wire model source fields %v\nconfig's %v", got, want)
	}
	gpus := "0,1"
	in := config.Instance{Name: "a", Executable: "/x/llama-server", Cmd: []string{"--port", "8001"}, LogFile: "/l/a.log",
		Background: true, GPUIDs: &gpus, Env: map[string]string{"K": "v"}, LibDir: "/lib", Host: "127.0.0.1", Port: 8001,
		URL: "http://127.0.0.1:8001", Model: "/m/a.gguf",
		ModelSource: &config.ModelSource{Name: "m", URL: "https://secret@host/a.gguf", Shown: "https://host/a.gguf", SHA256: []string{"ab"}, Path: "/m/a.gguf", Parts: 1, TokenEnv: "TOK"},
		Restart:     "always", ReadyTimeout: 1500 * time.Millisecond, StopTimeout: 7 * time.Second, ReadyTimeoutS: 1.5, StopTimeoutS: 7,
		LogMaxSize: 1 << 20, LogMaxFiles: 3, LogToStdout: true,
		LivenessInterval: 15 * time.Second, LivenessTimeout: 10 * time.Second, DrainTimeout: 30 * time.Second,
		LivenessIntervalS: 15, LivenessTimeoutS: 10, DrainTimeoutS: 30, LivenessFailures: 3, MetricsProxy: true}
	b, err := json.Marshal(WireInstance(in))
	if err != nil {
		t.Fatal(err)
	}
	var back Instance
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	got := back.Spec()
	if !got.Same(in) {
		t.Errorf("round trip:\n%+v\nwant\n%+v", got, in)
	}
	// Durations travel as seconds, numbers, and come back as durations.
	if got.ReadyTimeout != in.ReadyTimeout || got.DrainTimeout != in.DrainTimeout || !strings.Contains(string(b), `"ready_timeout_s":1.5`) {
		t.Errorf("durations: %s → %v, %v", b, got.ReadyTimeout, got.DrainTimeout)
	}
	// The model's URL may carry secrets: only its redacted form travels.
	if strings.Contains(string(b), "secret") {
		t.Errorf("the model URL's secret went on the wire: %s", b)
	}
}
