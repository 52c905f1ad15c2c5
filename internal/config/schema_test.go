package config

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/llamaboot/llamaboot/schema"
)

// toJSON turns a parsed file into the JSON document the schema describes.
func toJSON(t *Table) map[string]any {
	m := map[string]any{}
	for _, k := range t.Keys() {
		v, _ := t.Get(k)
		m[k] = jsonOf(v)
	}
	return m
}

func jsonOf(v any) any {
	switch x := v.(type) {
	case *Table:
		return toJSON(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonOf(e)
		}
		return out
	case string, int64, float64, bool:
		return x
	}
	return map[string]any{"not-a-toml-scalar": true}
}

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema.ConfigJSON))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("config.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("config.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func schemaValidate(t *testing.T, s *jsonschema.Schema, file string, data []byte, overrides string) error {
	t.Helper()
	root, err := parseTOML(file, data)
	if err != nil {
		t.Fatal(err)
	}
	if overrides != "" {
		ov, err := parseOverrides(overrides)
		if err != nil {
			t.Fatal(err)
		}
		mergeInto(root, ov)
	}
	b, _ := json.Marshal(toJSON(root))
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return s.Validate(inst)
}

func TestSchemaAgreesWithValidator(t *testing.T) {
	s := compileSchema(t)
	files, _ := filepath.Glob("../../testdata/parity/*.toml")
	for _, f := range files {
		data, _ := os.ReadFile(f)
		if err := schemaValidate(t, s, f, data, ""); err != nil {
			t.Errorf("%s: schema rejects a valid file: %v", f, err)
		}
	}
	checked := 0
	for _, c := range validationCases {
		if schemaBlind[c.name] {
			continue
		}
		checked++
		if err := schemaValidate(t, s, "cfg.toml", []byte(c.toml), c.overrides); err == nil {
			t.Errorf("%s: schema accepts what the validator refuses", c.name)
		}
	}
	if checked < 20 {
		t.Errorf("only %d cases checked against the schema", checked)
	}
}
