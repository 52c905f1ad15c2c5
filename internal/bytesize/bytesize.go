// Package bytesize reads and writes byte counts with units (64GiB, 500MB,
// 1073741824), for flags and config keys alike.
package bytesize

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Binary prefixes (KiB, MiB, GiB, TiB) and bare K/M/G/T are powers of
// 1024; KB, MB, GB, TB are powers of 1000.
var units = []struct {
	suffix string
	mult   float64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"b", 1},
}

// Parse reads a size such as 68719476736, 64GiB, 64G, 500MB or 1.5TiB.
func Parse(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := 1.0
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n < 0 || math.IsInf(n*mult, 0) || n*mult > math.MaxInt64 {
		return 0, fmt.Errorf("%q is not a size: give bytes or a number with a unit, such as 64GiB, 500MB or 1073741824", s)
	}
	return int64(n * mult), nil
}

// Format is the shortest exact form of n: 64GiB, 1500MB, 12345.
func Format(n int64) string {
	if n == 0 {
		return "0"
	}
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}} {
		if n%u.mult == 0 {
			return fmt.Sprintf("%d%s", n/u.mult, u.suffix)
		}
	}
	return strconv.FormatInt(n, 10)
}
