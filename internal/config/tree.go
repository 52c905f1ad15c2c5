package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Table is a TOML table that remembers key order and where each key was
// written: the command line follows file order, and errors cite lines.
type Table struct {
	keys []string
	idx  map[string]int // key → index into keys, vals and pos
	vals []any          // string, int64, float64, bool, []any, *Table, or a TOML date/time
	pos  []Pos
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
	return &Table{idx: map[string]int{}, Pos: pos}
}

// Keys returns the keys in order.
func (t *Table) Keys() []string { return t.keys }

// Get returns a key's value.
func (t *Table) Get(k string) (any, bool) {
	if i, ok := t.idx[k]; ok {
		return t.vals[i], true
	}
	return nil, false
}

// val returns a key's value, or nil.
func (t *Table) val(k string) any {
	v, _ := t.Get(k)
	return v
}

// PosOf returns where key k was set (or the table's own position).
func (t *Table) PosOf(k string) Pos {
	if i, ok := t.idx[k]; ok {
		return t.pos[i]
	}
	return t.Pos
}

// Set sets k, keeping its position in the order if it exists.
func (t *Table) Set(k string, v any, pos Pos) {
	if i, ok := t.idx[k]; ok {
		t.vals[i], t.pos[i] = v, pos
		return
	}
	t.idx[k] = len(t.keys)
	t.keys = append(t.keys, k)
	t.vals = append(t.vals, v)
	t.pos = append(t.pos, pos)
}

// Clone copies the table deeply enough that merging into the copy leaves
// the original alone.
func (t *Table) Clone() *Table {
	c := &Table{idx: make(map[string]int, len(t.keys)), Pos: t.Pos,
		keys: append([]string(nil), t.keys...), vals: make([]any, len(t.vals)), pos: append([]Pos(nil), t.pos...)}
	for i, k := range t.keys {
		c.idx[k] = i
		v := t.vals[i]
		switch x := v.(type) {
		case *Table:
			v = x.Clone()
		case []any:
			v = append([]any(nil), x...)
		}
		c.vals[i] = v
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
	for i, k := range src.keys {
		sv := src.vals[i]
		if st, ok := sv.(*Table); ok {
			if dt, ok := dst.val(k).(*Table); ok {
				mergeInto(dt, st)
				continue
			}
		}
		dst.Set(k, sv, src.pos[i])
	}
}
