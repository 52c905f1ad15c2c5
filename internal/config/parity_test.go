package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// parityFields are the fields the old launcher's output pairs carry.
type parityFields struct {
	Name       string   `json:"name"`
	Executable string   `json:"executable"`
	Cmd        []string `json:"cmd"`
	LogFile    string   `json:"log_file"`
	Background bool     `json:"background"`
	GPUIDs     *string  `json:"gpu_ids"`
}

func TestParity(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/parity/*.toml")
	if len(files) < 8 {
		t.Fatalf("found %d parity inputs, want the shared ones and ours", len(files))
	}
	for _, f := range files {
		base := strings.TrimSuffix(f, ".toml")
		t.Run(filepath.Base(base), func(t *testing.T) {
			data, _ := os.ReadFile(f)
			o := Options{AppDir: t.TempDir()}
			if ov, err := os.ReadFile(base + ".env-overrides.json"); err == nil {
				o.Overrides = string(ov)
			}
			plan, err := Parse(f, data, o)
			if err != nil {
				t.Fatal(err)
			}
			// Round-trip through JSON as `plan --json` prints it.
			out, _ := json.Marshal(plan.Instances)
			if plan.Instances == nil {
				out = []byte("[]")
			}
			var got, want []parityFields
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			exp, _ := os.ReadFile(base + ".expected.json")
			if err := json.Unmarshal(exp, &want); err != nil {
				t.Fatal(err)
			}
			if len(got) == 0 && len(want) == 0 {
				return
			}
			if !reflect.DeepEqual(got, want) {
				g, _ := json.MarshalIndent(got, "", "  ")
				w, _ := json.MarshalIndent(want, "", "  ")
				t.Errorf("plan differs from the old launcher\n got: %s\nwant: %s", g, w)
			}
		})
	}
}

func TestPyFloat(t *testing.T) {
	for f, want := range map[float64]string{
		1.0: "1.0", 0.95: "0.95", 1e-05: "1e-05", 1e20: "1e+20", 1e16: "1e+16", 1e15: "1000000000000000.0",
		0.0001: "0.0001", 0.00001234: "1.234e-05", -2.5: "-2.5", 123456.789: "123456.789", 0: "0.0", 1.5e300: "1.5e+300",
	} {
		if got := PyFloat(f); got != want {
			t.Errorf("PyFloat(%v) = %q, want %q", f, got, want)
		}
	}
}
