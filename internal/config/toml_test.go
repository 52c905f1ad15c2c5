package config

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	toml "github.com/pelletier/go-toml/v2"
)

// decodeCases exercise the TOML rules parseTOML enforces itself: keys and
// tables defined twice, dotted-key and inline tables, arrays of tables,
// scalar forms. Each is checked against go-toml's decoder.
var decodeCases = []string{
	"a = 1\nb = 'x'\nc = true\nd = 1.5\n",
	"a = 1\na = 2\n",
	"[a]\nx = 1\n[a]\ny = 2\n",
	"[a.b]\nx = 1\n[a]\ny = 2\n",
	"[a.b]\nx = 1\n[a]\ny = 2\n[a]\n",
	"[a]\nb.c = 1\n[a.b]\n",
	"[a]\nb.c = 1\n[a.b.d]\ne = 1\n",
	"[a]\nb.c = 1\nb.d = 2\nb = 3\n",
	"a = {x = 1}\n[a]\n",
	"a = {x = 1}\n[a.b]\n",
	"a = {x = 1}\na.y = 2\n",
	"a = {x = 1, x = 2}\n",
	"a = {x.y = 1, x.z = 2}\n",
	"a = [{x = 1, x = 2}]\n",
	"a = [[{x = 1}], {y = 2}]\n",
	"[[a]]\nx = 1\n[[a]]\nx = 2\n[a.b]\ny = 3\n",
	"[[a]]\nx = 1\n[[a.b]]\ny = 1\n[[a]]\n[[a.b]]\ny = 2\n",
	"[[a]]\n[a]\n",
	"[a]\n[[a]]\n",
	"a = [1]\n[[a]]\n",
	"a = 1\n[a.b]\n",
	"a.b = 1\n[a]\n",
	"a.b = 1\n[a.c]\nd = 2\n",
	"[a.b.c]\n[a.b]\n[a]\n[a.b.c]\n",
	"x = 0x1F\ny = 0o17\nz = 0b101\nw = 1_000\nv = -17\nu = +5\n",
	"x = 9223372036854775807\n",
	"x = 9223372036854775808\n",
	"x = -9223372036854775808\n",
	"x = 1__0\n",
	"x = 01\n",
	"x = inf\ny = -inf\nz = nan\nw = 1e10\nv = 6.626e-34\nu = 1_0.5\n",
	"x = 1.\n",
	"x = 1979-05-27T07:32:00Z\ny = 1979-05-27T00:32:00.999999-07:00\nz = 1979-05-27T07:32:00\nw = 1979-05-27\nv = 07:32:00\n",
	"x = 1979-13-27\n",
	"x = 1979-05-27T25:32:00Z\n",
	"x = \"\\u00e9 \\t\"\ny = '''\nraw\n'''\nz = \"\"\"\nline \\\n  cont\"\"\"\n",
	"x = \"\\q\"\n",
	"\"quoted key\" = 1\n'lit.key' = 2\n\"a\".b = 3\n",
	"[ a . b ]\nc = 1\n",
	"x = [1, 'a', 2.5, [true]]\n",
	"x = [\n 1,\n 2,\n]\n",
	"x =\n",
	"[a\n",
	"x = 1 y = 2\n",
	"# only a comment\n",
	"",
	"\xff = 1\n",
	"[instance.a.server]\nport = 8080\n[instance.a.control]\ngpu_ids = \"0\"\n",
}

func TestDecodeAgreesWithGoTOML(t *testing.T) {
	inputs := append([]string(nil), decodeCases...)
	files, _ := filepath.Glob("../../testdata/parity/*.toml")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, string(b))
	}
	for _, in := range inputs {
		checkAgainstGoTOML(t, []byte(in))
	}
}

func FuzzDecodeAgreesWithGoTOML(f *testing.F) {
	for _, c := range decodeCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkAgainstGoTOML(t, data) })
}

// checkAgainstGoTOML: both decoders accept data with the same values, or
// both refuse it at the same line.
func checkAgainstGoTOML(t *testing.T, data []byte) {
	t.Helper()
	var want map[string]any
	werr := toml.Unmarshal(data, &want)
	got, gerr := parseTOML("t.toml", data)
	switch {
	case werr != nil && gerr == nil:
		t.Errorf("%q: go-toml refuses it (%v), parseTOML accepts it", data, werr)
	case werr == nil && gerr != nil:
		t.Errorf("%q: go-toml accepts it, parseTOML refuses it: %v", data, gerr)
	case werr != nil:
		var de *toml.DecodeError
		var se *SyntaxError
		if !errors.As(gerr, &se) {
			t.Fatalf("%q: error is not a SyntaxError: %v", data, gerr)
		}
		if errors.As(werr, &de) {
			if row, _ := de.Position(); row != se.Line {
				t.Errorf("%q: go-toml places it at line %d (%v), parseTOML at %d (%v)", data, row, werr, se.Line, gerr)
			}
		}
		if se.Context == "" || !strings.Contains(se.Error(), "t.toml:") {
			t.Errorf("%q: error without place or context: %v", data, gerr)
		}
	default:
		if g := plain(got); !sameValue(g, map[string]any(want)) {
			t.Errorf("%q:\n go-toml   %#v\n parseTOML %#v", data, want, g)
		}
	}
}

// plain turns Tables into maps, as go-toml decodes them.
func plain(v any) any {
	switch x := v.(type) {
	case *Table:
		m := map[string]any{}
		for _, k := range x.Keys() {
			e, _ := x.Get(k)
			m[k] = plain(e)
		}
		return m
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = plain(e)
		}
		return out
	}
	return v
}

// sameValue is reflect.DeepEqual with NaN equal to NaN.
func sameValue(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if w, ok := y[k]; !ok || !sameValue(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !sameValue(x[i], y[i]) {
				return false
			}
		}
		return true
	case float64:
		y, ok := b.(float64)
		return ok && (x == y || math.IsNaN(x) && math.IsNaN(y))
	}
	return reflect.DeepEqual(a, b)
}

// TestKeyLinesAndOrder: every key remembers its own line, and keys keep
// file order, in a file large enough that counting lines per key from the
// file start (the old way) would show.
func TestKeyLinesAndOrder(t *testing.T) {
	data := largeConfig(2000, false)
	root, err := parseTOML("big.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	inst, _ := root.Get("instance")
	srv, _ := inst.(*Table).Get("server")
	s := srv.(*Table)
	if len(s.Keys()) != 2000 {
		t.Fatalf("%d keys", len(s.Keys()))
	}
	for i, k := range s.Keys() {
		if want := "flag_" + strconv.Itoa(i); k != want {
			t.Fatalf("key %d is %s, want %s", i, k, want)
		}
		if p := s.PosOf(k); p.Line != i+2 {
			t.Fatalf("%s at line %d, want %d", k, p.Line, i+2)
		}
	}
}
