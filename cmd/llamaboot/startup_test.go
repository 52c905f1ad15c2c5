package main

import (
	"os/exec"
	"strings"
	"testing"
)

// Every command pays the package init of everything linked, `version` and
// `healthcheck` (run every few seconds by Docker) included: what only the
// metrics endpoint needs must not be among it. The built binary's own
// init trace says what runs.
func TestStartupInitsNoMetricsLibraries(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"healthcheck", "--app-dir", t.TempDir()}} {
		cmd := exec.Command(llamaboot, args...)
		cmd.Env = cleanEnv("GODEBUG=inittrace=1")
		out, _ := cmd.CombinedOutput()
		inits := strings.Count(string(out), "\ninit ")
		if inits < 10 {
			t.Fatalf("no init trace from %v:\n%s", args, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			for _, heavy := range []string{"prometheus", "protobuf", "procfs", "expvar"} {
				if strings.HasPrefix(line, "init ") && strings.Contains(line, heavy) {
					t.Errorf("%v initialises %s: %s", args, heavy, line)
				}
			}
		}
	}
}
