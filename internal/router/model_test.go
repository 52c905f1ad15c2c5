package router

import (
	"encoding/json"
	"strings"
	"testing"
)

// modelByDecoding is what modelOf must agree with: the body decoded by
// encoding/json into an interface{}, its top-level "model" taken.
func modelByDecoding(body []byte) (model string, ok bool) {
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return "", false
	}
	switch v := v.(type) {
	case nil:
		return "", true
	case map[string]any:
		switch m := v["model"].(type) {
		case nil:
			return "", true
		case string:
			return m, true
		}
	}
	return "", false
}

var modelSeeds = []string{
	`{"model":"a"}`, ` { "model" : "qwen-7b" , "messages":[{"role":"user","content":"hi"}] } `,
	`{"messages":[{"model":"inner"}],"model":"outer"}`, `{"x":{"model":"inner"}}`, `{"model":"a","model":"b"}`,
	`{"model":"a","model":null}`, `{"model":null,"model":"b"}`, `{"model":1}`, `{"model":1,"model":"b"}`, `{"model":"a","model":[1]}`,
	`{"Model":"a"}`, `{"mod\u0065l":"a"}`, `{"model":"\u00e9\n\"x\\"}`, "{\"model\":\"\xff\xfe\"}", `{"model":"a\/b"}`,
	`{}`, `[]`, `[{"model":"a"}]`, `"model"`, `null`, `1`, `true`, ``, ` `, `{`, `{"model":"a"`, `{"model":"a"} x`,
	`{"model":"a",}`, `{"a":"}","model":"b"}`, `{"a":"\"","model":"c"}`, `{"a":[["]"]],"model":"d"}`, `{"a":-1.5e3,"model":"e"}`,
	`{"a":true,"b":false,"c":null,"model":"f"}`, "{\"model\":\"a\u0000\"}", "\t\r\n{\"model\"\t:\n\"g\"}\r\n",
}

// modelOf agrees with encoding/json on the seeds above: valid bodies name
// the same model, invalid ones are refused.
func TestModelOf(t *testing.T) {
	for _, b := range modelSeeds {
		checkModelOf(t, []byte(b))
	}
	// Big bodies: an image in base64 before the model, deep nesting.
	checkModelOf(t, []byte(`{"messages":[{"content":"`+strings.Repeat("QUJD", 1<<18)+`"}],"model":"vision"}`))
	checkModelOf(t, []byte(`{"a":`+strings.Repeat("[", 500)+strings.Repeat("]", 500)+`,"model":"deep"}`))
}

func checkModelOf(t *testing.T, body []byte) {
	t.Helper()
	want, wantOK := modelByDecoding(body)
	got, err := modelOf(body)
	if (err == nil) != wantOK || got != want {
		t.Fatalf("body %.80q: modelOf = %q, %v; encoding/json: %q, ok %v", body, got, err, want, wantOK)
	}
}

// FuzzModelOf checks modelOf against encoding/json on arbitrary bodies.
func FuzzModelOf(f *testing.F) {
	for _, b := range modelSeeds {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkModelOf(t, body) })
}

func BenchmarkModelOf(b *testing.B) {
	body := []byte(`{"model":"fast","messages":[{"role":"user","content":"hi"}]}`)
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if m, err := modelOf(body); m != "fast" || err != nil {
				b.Fatal(m, err)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var head struct {
				Model string `json:"model"`
			}
			if err := json.Unmarshal(body, &head); err != nil || head.Model != "fast" {
				b.Fatal(head, err)
			}
		}
	})
}
