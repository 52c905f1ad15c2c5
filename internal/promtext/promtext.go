// Package promtext writes and reads the Prometheus text exposition format
// (version 0.0.4): what llamaboot's /metrics serves, and what llama-server's
// /metrics answers for the watchdog and the metrics proxy. It stands in for
// client_golang, whose package init (with protobuf's and procfs') every
// llamaboot command paid at start-up, `version` and `healthcheck` included,
// though only the metrics endpoint needs any of it.
package promtext

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Metric types, as the TYPE line names them.
const (
	Counter   = "counter"
	Gauge     = "gauge"
	Histogram = "histogram"
	Summary   = "summary"
	Untyped   = "untyped"
)

// Label is one name="value" pair.
type Label struct{ Name, Value string }

// Sample is one line: a sample name (a histogram's name_bucket, name_sum,
// name_count), its labels in order, and its value.
type Sample struct {
	Name   string
	Labels []Label
	Value  float64
}

// Label returns the value of the label name ("" when absent).
func (s Sample) Label(name string) string {
	for _, l := range s.Labels {
		if l.Name == name {
			return l.Value
		}
	}
	return ""
}

// Family is a metric's HELP, TYPE and samples.
type Family struct {
	Name, Help, Type string
	Samples          []Sample
}

// Collector gives families at each scrape.
type Collector interface{ Collect() []Family }

// Write writes fams in the text format, in the order given.
func Write(w io.Writer, fams []Family) error {
	bw := bufio.NewWriter(w)
	for _, f := range fams {
		if len(f.Samples) == 0 {
			continue
		}
		if f.Help != "" {
			fmt.Fprintf(bw, "# HELP %s %s\n", f.Name, escapeHelp(f.Help))
		}
		typ := f.Type
		if typ == "" {
			typ = Untyped
		}
		fmt.Fprintf(bw, "# TYPE %s %s\n", f.Name, typ)
		for _, s := range f.Samples {
			name := s.Name
			if name == "" {
				name = f.Name
			}
			bw.WriteString(name)
			if len(s.Labels) > 0 {
				bw.WriteByte('{')
				for i, l := range s.Labels {
					if i > 0 {
						bw.WriteByte(',')
					}
					fmt.Fprintf(bw, "%s=\"%s\"", l.Name, escapeValue(l.Value))
				}
				bw.WriteByte('}')
			}
			bw.WriteByte(' ')
			bw.WriteString(FormatFloat(s.Value))
			bw.WriteByte('\n')
		}
	}
	return bw.Flush()
}

// FormatFloat writes a value as Prometheus does: the shortest exact form,
// +Inf, -Inf, NaN.
func FormatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	valueEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeValue(s string) string { return valueEscaper.Replace(s) }

// Parse reads the text format into families by name, samples in the order
// read. A histogram's or summary's _bucket, _sum and _count samples belong
// to its family; a sample with no TYPE line before it makes an untyped
// family of its own name.
func Parse(r io.Reader) (map[string]*Family, error) {
	fams := map[string]*Family{}
	family := func(name string) *Family {
		f := fams[name]
		if f == nil {
			f = &Family{Name: name, Type: Untyped}
			fams[name] = f
		}
		return f
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
			continue
		case strings.HasPrefix(line, "#"):
			f := strings.Fields(line)
			if len(f) >= 3 && f[1] == "HELP" {
				_, help, _ := strings.Cut(strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(line, "#"), " HELP")), " ")
				family(f[2]).Help = unescape(help, false)
			}
			if len(f) >= 4 && f[1] == "TYPE" {
				switch f[3] {
				case Counter, Gauge, Histogram, Summary, Untyped:
					family(f[2]).Type = f[3]
				default:
					return nil, fmt.Errorf("line %d: unknown metric type %q", n, f[3])
				}
			}
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		owner := s.Name
		if _, ok := fams[owner]; !ok {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				base, cut := strings.CutSuffix(s.Name, suffix)
				if f := fams[base]; cut && f != nil && (f.Type == Histogram || f.Type == Summary) {
					owner = base
					break
				}
			}
		}
		f := family(owner)
		f.Samples = append(f.Samples, s)
	}
	return fams, sc.Err()
}

// parseSample reads `name{label="value",…} value [timestamp]`.
func parseSample(line string) (Sample, error) {
	var s Sample
	i := strings.IndexAny(line, "{ \t")
	if i <= 0 {
		return s, fmt.Errorf("not a sample: %q", line)
	}
	s.Name, line = line[:i], line[i:]
	if line[0] == '{' {
		line = line[1:]
		for {
			line = strings.TrimLeft(line, " \t,")
			if strings.HasPrefix(line, "}") {
				line = line[1:]
				break
			}
			eq := strings.IndexByte(line, '=')
			if eq <= 0 || len(line) < eq+2 || line[eq+1] != '"' {
				return s, fmt.Errorf("bad labels in %q", s.Name)
			}
			name := strings.TrimSpace(line[:eq])
			rest := line[eq+2:]
			end := closingQuote(rest)
			if end < 0 {
				return s, fmt.Errorf("unterminated label value in %q", s.Name)
			}
			s.Labels = append(s.Labels, Label{name, unescape(rest[:end], true)})
			line = rest[end+1:]
		}
	}
	f := strings.Fields(line)
	if len(f) < 1 || len(f) > 2 {
		return s, fmt.Errorf("bad value for %q", s.Name)
	}
	v, err := parseFloat(f[0])
	if err != nil {
		return s, fmt.Errorf("bad value for %q: %w", s.Name, err)
	}
	s.Value = v
	return s, nil
}

func parseFloat(s string) (float64, error) {
	switch s {
	case "+Inf", "Inf":
		return math.Inf(1), nil
	case "-Inf":
		return math.Inf(-1), nil
	case "NaN":
		return math.NaN(), nil
	}
	return strconv.ParseFloat(s, 64)
}

// closingQuote is the index of the first unescaped '"' in s, or -1.
func closingQuote(s string) int {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

func unescape(s string, quotes bool) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 'n':
			b.WriteByte('\n')
		case '\\':
			b.WriteByte('\\')
		case '"':
			if quotes {
				b.WriteByte('"')
			} else {
				b.WriteString(`\"`)
			}
		default:
			b.WriteByte('\\')
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// Value is the first sample's value of the family name, for counters and
// gauges (false: no such family or no sample).
func Value(fams map[string]*Family, name string) (float64, bool) {
	f := fams[name]
	if f == nil || len(f.Samples) == 0 {
		return 0, false
	}
	return f.Samples[0].Value, true
}

// Sorted returns fams ordered by name.
func Sorted(fams []Family) []Family {
	out := slices.Clone(fams)
	slices.SortStableFunc(out, func(a, b Family) int { return strings.Compare(a.Name, b.Name) })
	return out
}
