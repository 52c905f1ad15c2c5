package metrics

import (
	"bytes"
	"os"
	"strconv"
	"strings"

	"github.com/llamaboot/llamaboot/internal/promtext"
)

// processFamilies are the supervisor's own process_* series, read from
// /proc as Prometheus' process collector reads them.
func processFamilies() []promtext.Family {
	const ticks = 100 // USER_HZ on Linux
	gauge := func(name, help string, v float64) promtext.Family {
		return promtext.Family{Name: name, Help: help, Type: promtext.Gauge, Samples: []promtext.Sample{{Value: v}}}
	}
	var out []promtext.Family
	if b, err := os.ReadFile("/proc/self/stat"); err == nil {
		if i := bytes.LastIndexByte(b, ')'); i > 0 {
			f := strings.Fields(string(b[i+1:]))
			num := func(k int) float64 { // k: field number in proc(5), 1-based
				v, _ := strconv.ParseFloat(f[k-3], 64)
				return v
			}
			if len(f) > 21 {
				out = append(out,
					promtext.Family{Name: "process_cpu_seconds_total", Help: "Total user and system CPU time spent in seconds.", Type: promtext.Counter,
						Samples: []promtext.Sample{{Value: (num(14) + num(15)) / ticks}}},
					gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", num(23)),
					gauge("process_resident_memory_bytes", "Resident memory size in bytes.", num(24)*float64(os.Getpagesize())))
				if boot, ok := bootTime(); ok {
					out = append(out, gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", boot+num(22)/ticks))
				}
			}
		}
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		out = append(out, gauge("process_open_fds", "Number of open file descriptors.", float64(len(fds))))
	}
	if b, err := os.ReadFile("/proc/self/limits"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
				if f := strings.Fields(rest); len(f) > 0 {
					if v, err := strconv.ParseFloat(f[0], 64); err == nil {
						out = append(out, gauge("process_max_fds", "Maximum number of open file descriptors.", v))
					}
				}
			}
		}
	}
	return out
}

// bootTime is when the system booted, from /proc/stat's btime.
func bootTime() (float64, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "btime "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}
