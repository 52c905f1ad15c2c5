package config

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// parseTOML parses data into an ordered Table in one pass over go-toml's
// parser, in time linear in the file: go-toml's own decoder tracks seen keys
// in a list it searches per key (quadratic for large files), and its node
// positions are counted from the file start. The table rules it enforces
// (no key or table defined twice, dotted-key and inline tables closed,
// arrays of tables) are enforced here with maps; TestDecodeAgreesWithGoTOML
// and FuzzDecodeAgreesWithGoTOML hold the two decoders to the same answers.
func parseTOML(file string, data []byte) (*Table, error) {
	b := &tomlBuilder{file: file, data: data, lines: lineCursor{data: data, line: 1}, kinds: map[slot]kind{}}
	root := newTable(Pos{File: file})
	cur := root
	var p unstable.Parser
	p.Reset(data)
	for p.NextExpression() {
		e := p.Expression()
		var err error
		switch e.Kind {
		case unstable.Table:
			cur, err = b.header(root, e, false)
		case unstable.ArrayTable:
			cur, err = b.header(root, e, true)
		case unstable.KeyValue:
			err = b.keyValue(cur, e)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := p.Error(); err != nil {
		return nil, b.parserError(err)
	}
	return root, nil
}

// kind is how a key came to exist; it decides what may later extend it.
type kind uint8

const (
	kindValue    kind = iota + 1 // scalar, array or inline table: closed
	kindDotted                   // table made by a dotted key: only dotted keys extend it
	kindImplicit                 // table made as a parent in a [header]: may get its own header once
	kindHeader                   // table opened by its own [header]
	kindArray                    // array of tables ([[header]]); headers descend into its last element
)

func (k kind) String() string {
	return [...]string{"", "value", "table defined by dotted keys", "table", "table", "array of tables"}[k]
}

type slot struct {
	t *Table
	k string
}

type tomlBuilder struct {
	file  string
	data  []byte
	lines lineCursor
	kinds map[slot]kind
}

func (b *tomlBuilder) pos(off uint32) Pos {
	return Pos{File: b.file, Line: b.lines.at(int(off))}
}

// fail is a rule broken at the key node n.
func (b *tomlBuilder) fail(n *unstable.Node, format string, args ...any) error {
	return b.syntaxError(int(n.Raw.Offset), fmt.Sprintf(format, args...))
}

// header opens [a.b.c] or [[a.b.c]] and returns the table keys go to.
func (b *tomlBuilder) header(root *Table, e *unstable.Node, array bool) (*Table, error) {
	t := root
	it := e.Key()
	for it.Next() {
		n := it.Node()
		name := string(n.Data)
		at := slot{t, name}
		k, seen := b.kinds[at]
		if !it.IsLast() {
			switch {
			case !seen:
				t = b.newChild(t, n, kindImplicit)
			case k == kindArray:
				list := t.val(name).([]any)
				t = list[len(list)-1].(*Table)
			case k == kindValue:
				return nil, b.fail(n, "key %s already exists as a value", name)
			default:
				t = t.val(name).(*Table)
			}
			continue
		}
		if array {
			switch {
			case !seen:
				b.kinds[at] = kindArray
				t.Set(name, []any{}, b.pos(n.Raw.Offset))
			case k != kindArray:
				return nil, b.fail(n, "key %s already exists as a %s, but should be an array of tables", name, k)
			}
			elem := newTable(b.pos(n.Raw.Offset))
			t.Set(name, append(t.val(name).([]any), elem), t.PosOf(name))
			return elem, nil
		}
		switch k {
		case 0:
			return b.newChild(t, n, kindHeader), nil
		case kindImplicit:
			b.kinds[at] = kindHeader
			return t.val(name).(*Table), nil
		case kindHeader:
			return nil, b.fail(n, "table %s already exists", name)
		case kindDotted:
			return nil, b.fail(n, "table %s already exists as defined by a dotted key", name)
		case kindArray:
			return nil, b.fail(n, "table %s already exists as an array of tables", name)
		default:
			return nil, b.fail(n, "key %s should be a table, not a %s", name, k)
		}
	}
	return t, nil
}

// newChild creates the table named by key node n in t.
func (b *tomlBuilder) newChild(t *Table, n *unstable.Node, k kind) *Table {
	sub := newTable(b.pos(n.Raw.Offset))
	t.Set(string(n.Data), sub, sub.Pos)
	b.kinds[slot{t, string(n.Data)}] = k
	return sub
}

// keyValue sets a (possibly dotted) key = value in t.
func (b *tomlBuilder) keyValue(t *Table, e *unstable.Node) error {
	it := e.Key()
	for it.Next() {
		n := it.Node()
		name := string(n.Data)
		at := slot{t, name}
		k, seen := b.kinds[at]
		if !it.IsLast() {
			switch {
			case !seen:
				t = b.newChild(t, n, kindDotted)
			case k == kindDotted:
				t = t.val(name).(*Table)
			default:
				return b.fail(n, "key %s is already defined", name)
			}
			continue
		}
		if seen {
			return b.fail(n, "key %s is already defined", name)
		}
		pos := b.pos(n.Raw.Offset)
		v, err := b.value(e.Value(), pos)
		if err != nil {
			return err
		}
		b.kinds[at] = kindValue
		t.Set(name, v, pos)
	}
	return nil
}

// value converts a value node. Tables inside it (inline tables) take pos.
func (b *tomlBuilder) value(v *unstable.Node, pos Pos) (any, error) {
	switch v.Kind {
	case unstable.String:
		return string(v.Data), nil
	case unstable.Bool:
		return v.Data[0] == 't', nil
	case unstable.Integer:
		// Plain decimals are nearly every number in these files; the
		// parser has checked their syntax (no leading zeros).
		if n, err := strconv.ParseInt(string(v.Data), 10, 64); err == nil {
			return n, nil
		}
		return b.scalar(v)
	case unstable.Float, unstable.DateTime, unstable.LocalDateTime, unstable.LocalDate, unstable.LocalTime:
		return b.scalar(v)
	case unstable.Array:
		list := []any{}
		it := v.Children()
		for it.Next() {
			item, err := b.value(it.Node(), pos)
			if err != nil {
				return nil, err
			}
			list = append(list, item)
		}
		return list, nil
	case unstable.InlineTable:
		t := newTable(pos)
		it := v.Children()
		for it.Next() {
			kv := it.Node()
			if err := b.keyValue(t, kv); err != nil {
				return nil, err
			}
		}
		return t, nil
	}
	return nil, b.syntaxError(int(v.Raw.Offset), fmt.Sprintf("unsupported value kind %s", v.Kind))
}

// scalar converts an integer, float or date/time literal with go-toml's
// own rules (underscores, bases, inf/nan, time zones), one literal at a
// time so its key tracking stays small.
func (b *tomlBuilder) scalar(v *unstable.Node) (any, error) {
	var m map[string]any
	if err := toml.Unmarshal(append([]byte("v="), v.Data...), &m); err != nil {
		msg := err.Error()
		var de *toml.DecodeError
		if errors.As(err, &de) {
			msg = strings.TrimPrefix(de.Error(), "toml: ")
		}
		return nil, b.syntaxError(int(v.Raw.Offset), msg)
	}
	return m["v"], nil
}

// parserError places a go-toml parser error: its highlight is a slice of
// the document, so its offset is where the capacities differ.
func (b *tomlBuilder) parserError(err error) error {
	var pe *unstable.ParserError
	if errors.As(err, &pe) && len(pe.Highlight) > 0 {
		off := cap(b.data) - cap(pe.Highlight)
		if off >= 0 && off < len(b.data) && &b.data[off] == &pe.Highlight[0] {
			return b.syntaxError(off, pe.Message)
		}
	}
	// Not placed: ask go-toml's decoder, which places every error.
	var m map[string]any
	if derr := toml.Unmarshal(b.data, &m); derr != nil {
		var de *toml.DecodeError
		if errors.As(derr, &de) {
			row, col := de.Position()
			return &SyntaxError{File: b.file, Line: row, Column: col, Msg: strings.TrimPrefix(de.Error(), "toml: "), Context: de.String()}
		}
		err = derr
	}
	return &SyntaxError{File: b.file, Msg: err.Error()}
}

// syntaxError reports msg at byte off, with the line and a caret under the
// column as context.
func (b *tomlBuilder) syntaxError(off int, msg string) error {
	off = min(max(off, 0), len(b.data))
	start := bytes.LastIndexByte(b.data[:off], '\n') + 1
	end := bytes.IndexByte(b.data[off:], '\n')
	if end < 0 {
		end = len(b.data)
	} else {
		end += off
	}
	line := 1 + bytes.Count(b.data[:start], []byte{'\n'})
	col := 1 + len([]rune(string(b.data[start:off])))
	gutter := fmt.Sprintf("%d| ", line)
	ctx := gutter + strings.TrimRight(string(b.data[start:end]), "\r") + "\n" +
		strings.Repeat(" ", len(gutter)+col-1) + "^ " + msg
	return &SyntaxError{File: b.file, Line: line, Column: col, Msg: msg, Context: ctx}
}

// lineCursor turns growing byte offsets into 1-based line numbers,
// counting only the newlines since the previous offset.
type lineCursor struct {
	data      []byte
	off, line int
}

func (c *lineCursor) at(off int) int {
	off = min(off, len(c.data))
	if off < c.off { // offsets only grow in parse order; stay correct anyway
		c.off, c.line = 0, 1
	}
	c.line += bytes.Count(c.data[c.off:off], []byte{'\n'})
	c.off = off
	return c.line
}
