package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// largeConfig writes a config of about n keys in two shapes that users
// reach: many instances (five keys each), and one server table holding
// many flags.
func largeConfig(n int, manyInstances bool) []byte {
	var b strings.Builder
	if manyInstances {
		for i := 0; i < n/5; i++ {
			fmt.Fprintf(&b, "[instance.i%d.control]\ngpu_ids = \"%d\"\n[instance.i%d.server]\nport = %d\nctx_size = 4096\nmodel = \"/m/%d.gguf\"\n",
				i, i%8, i, 1024+i, i)
		}
		return []byte(b.String())
	}
	b.WriteString("[instance.server]\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "flag_%d = %d\n", i, i)
	}
	b.WriteString("[instance.a.server]\nport = 8080\n")
	return []byte(b.String())
}

// BenchmarkParseLarge parses 10k- and 40k-key configs and reports the time
// per 10k keys at each size, and their ratio: about 1 when parsing is
// linear (quadratic parsing made it 4).
func BenchmarkParseLarge(b *testing.B) {
	for _, shape := range []struct {
		name string
		many bool
	}{{"instances", true}, {"flags", false}} {
		b.Run(shape.name, func(b *testing.B) {
			per := map[int]float64{}
			for _, n := range []int{10000, 40000} {
				data := largeConfig(n, shape.many)
				var total time.Duration
				for range b.N {
					start := time.Now()
					if _, err := Parse("big.toml", data, Options{Exists: func(string) bool { return false }}); err != nil {
						b.Fatal(err)
					}
					total += time.Since(start)
				}
				per[n] = float64(total.Microseconds()) / 1000 / float64(b.N) / float64(n/10000)
				b.ReportMetric(per[n], fmt.Sprintf("ms/10k-keys@%dk", n/1000))
			}
			b.ReportMetric(per[40000]/per[10000], "ratio-40k/10k")
		})
	}
}
