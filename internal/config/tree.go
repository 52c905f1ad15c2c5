package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Table is a TOML table that remembers key order and where each key was
// written: the command line follows file order, and errors cite lines.
type Table struct {
	keys []string
	vals map[string]any // string, int64, float64, bool, []any, *Table, or a TOML date/time
	pos  map[string]Pos
	Pos  Pos // where the table was opened
}

// Pos is where a key was set: a line of the TOML file, or the overrides JSON.
type Pos struct {
	File string
	Line int
}

func (p Pos) String() string {
	if p.Line == 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d", p.File, p.Line)
}

func newTable(pos Pos) *Table {
	return &Table{vals: map[string]any{}, pos: map[string]Pos{}, Pos: pos}
}

// Keys returns the keys in order.
func (t *Table) Keys() []string { return t.keys }

// Get returns a key's value.
func (t *Table) Get(k string) (any, bool) {
	v, ok := t.vals[k]
	return v, ok
}

// PosOf returns where key k was set (or the table's own position).
func (t *Table) PosOf(k string) Pos {
	if p, ok := t.pos[k]; ok {
		return p
	}
	return t.Pos
}

// Set sets k, keeping its position in the order if it exists.
func (t *Table) Set(k string, v any, pos Pos) {
	if _, ok := t.vals[k]; !ok {
		t.keys = append(t.keys, k)
	}
	t.vals[k] = v
	t.pos[k] = pos
}

// Clone copies the table deeply enough that merging into the copy leaves
// the original alone.
func (t *Table) Clone() *Table {
	c := newTable(t.Pos)
	for _, k := range t.keys {
		v := t.vals[k]
		switch x := v.(type) {
		case *Table:
			v = x.Clone()
		case []any:
			v = append([]any(nil), x...)
		}
		c.Set(k, v, t.pos[k])
	}
	return c
}

// SyntaxError is a TOML file that does not parse.
type SyntaxError struct {
	File         string
	Line, Column int
	Msg          string
	Context      string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("%s:%d:%d: TOML syntax error: %s", e.File, e.Line, e.Column, e.Msg)
}

// BadInput marks the error as the user's input at fault.
func (e *SyntaxError) BadInput() bool { return true }

type keyInfo struct {
	seq  int
	line int
}

// parseTOML parses data into an ordered Table. Values come from go-toml's
// decoder (which checks the whole TOML spec); order and lines come from its
// parser, walked once more.
func parseTOML(file string, data []byte) (*Table, error) {
	var decoded map[string]any
	if err := toml.Unmarshal(data, &decoded); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, &SyntaxError{File: file, Line: row, Column: col, Msg: de.Error(), Context: de.String()}
		}
		return nil, &SyntaxError{File: file, Msg: err.Error()}
	}
	order, err := keyOrder(data)
	if err != nil {
		return nil, &SyntaxError{File: file, Msg: err.Error()}
	}
	return orderedTable(decoded, nil, order, file), nil
}

func pathKey(parts []string) string { return strings.Join(parts, "\x00") }

func keyOrder(data []byte) (map[string]keyInfo, error) {
	var p unstable.Parser
	p.Reset(data)
	order := map[string]keyInfo{}
	record := func(path []string, line int) {
		for i := 1; i <= len(path); i++ {
			k := pathKey(path[:i])
			if _, ok := order[k]; !ok {
				order[k] = keyInfo{seq: len(order), line: line}
			}
		}
	}
	keyOf := func(it unstable.Iterator) ([]string, int) {
		var parts []string
		line := 0
		for it.Next() {
			n := it.Node()
			parts = append(parts, string(n.Data))
			if line == 0 {
				line = p.Shape(n.Raw).Start.Line
			}
		}
		return parts, line
	}
	var walkValue func(path []string, v *unstable.Node)
	walkValue = func(path []string, v *unstable.Node) {
		if v.Kind != unstable.InlineTable {
			return
		}
		it := v.Children()
		for it.Next() {
			kv := it.Node()
			parts, line := keyOf(kv.Key())
			full := append(append([]string(nil), path...), parts...)
			record(full, line)
			walkValue(full, kv.Value())
		}
	}
	var cur []string
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			parts, line := keyOf(e.Key())
			cur = parts
			record(cur, line)
		case unstable.KeyValue:
			parts, line := keyOf(e.Key())
			full := append(append([]string(nil), cur...), parts...)
			record(full, line)
			walkValue(full, e.Value())
		}
	}
	return order, p.Error()
}

func orderedTable(m map[string]any, path []string, order map[string]keyInfo, file string) *Table {
	t := newTable(Pos{File: file, Line: order[pathKey(path)].line})
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	seq := func(k string) int { return order[pathKey(append(path[:len(path):len(path)], k))].seq }
	sortBy(keys, seq)
	for _, k := range keys {
		sub := append(path[:len(path):len(path)], k)
		t.Set(k, orderedValue(m[k], sub, order, file), Pos{File: file, Line: order[pathKey(sub)].line})
	}
	return t
}

func orderedValue(v any, path []string, order map[string]keyInfo, file string) any {
	switch x := v.(type) {
	case map[string]any:
		return orderedTable(x, path, order, file)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = orderedValue(e, path, order, file)
		}
		return out
	}
	return v
}

func sortBy(keys []string, seq func(string) int) {
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && seq(keys[j]) < seq(keys[j-1]); j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
}

// OverridesError is an AUTO_INFER_LLAMA_CPP_OVERRIDES value that is not a
// JSON object. The old launcher ignored it and started the wrong thing.
type OverridesError struct{ Err error }

func (e *OverridesError) Error() string {
	return fmt.Sprintf("AUTO_INFER_LLAMA_CPP_OVERRIDES is not a valid JSON object (%v); fix or unset it — nothing was started", e.Err)
}

// BadInput marks the error as the user's input at fault.
func (e *OverridesError) BadInput() bool { return true }

// parseOverrides reads the overrides JSON into an ordered Table.
func parseOverrides(s string) (*Table, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	pos := Pos{File: "AUTO_INFER_LLAMA_CPP_OVERRIDES"}
	v, err := jsonValue(dec, pos)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("trailing data after the object")
		}
	}
	if err != nil {
		return nil, &OverridesError{Err: err}
	}
	t, ok := v.(*Table)
	if !ok {
		return nil, &OverridesError{Err: fmt.Errorf("top level is %s, not an object", typeName(v))}
	}
	return t, nil
}

func jsonValue(dec *json.Decoder, pos Pos) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch x := tok.(type) {
	case json.Delim:
		switch x {
		case '{':
			t := newTable(pos)
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				v, err := jsonValue(dec, pos)
				if err != nil {
					return nil, err
				}
				t.Set(kt.(string), v, pos)
			}
			_, err := dec.Token()
			return t, err
		case '[':
			var list []any
			for dec.More() {
				v, err := jsonValue(dec, pos)
				if err != nil {
					return nil, err
				}
				list = append(list, v)
			}
			_, err := dec.Token()
			if list == nil {
				list = []any{}
			}
			return list, err
		}
	case json.Number:
		if i, err := strconv.ParseInt(x.String(), 10, 64); err == nil {
			return i, nil
		}
		return x.Float64()
	case nil:
		return nil, errors.New("null is not a TOML value")
	}
	return tok, nil
}

// mergeInto deep-merges src into dst: tables merge recursively, any other
// value replaces (keeping the key's place in the order).
func mergeInto(dst, src *Table) {
	for _, k := range src.keys {
		sv := src.vals[k]
		if st, ok := sv.(*Table); ok {
			if dt, ok := dst.vals[k].(*Table); ok {
				mergeInto(dt, st)
				continue
			}
		}
		dst.Set(k, sv, src.pos[k])
	}
}
