package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/testutil"
)

// health is the container's Docker health status and the last check's
// output.
func health(t *testing.T, id string) (status, last string) {
	t.Helper()
	var h struct {
		Status string
		Log    []struct {
			ExitCode int
			Output   string
		}
	}
	if err := json.Unmarshal([]byte(docker(t, "inspect", "-f", "{{json .State.Health}}", id)), &h); err != nil {
		t.Fatal(err)
	}
	if n := len(h.Log); n > 0 {
		last = h.Log[n-1].Output
	}
	return h.Status, last
}

func waitHealth(t *testing.T, id, want string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		status, last := health(t, id)
		if status == want {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("health never became %s (is %s; last check: %q)\n%s", want, status, last, logs(t, id))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDockerHealth runs the image's own HEALTHCHECK (llamaboot healthcheck
// over the control socket; the test only makes Docker check more often):
// starting while the model loads, healthy once ready, unhealthy once the
// instance hangs (the watchdog kills it and, under restart = "never",
// leaves it failed).
func TestDockerHealth(t *testing.T) {
	needDocker(t)
	var hc struct {
		Test        []string
		StartPeriod time.Duration
	}
	if err := json.Unmarshal([]byte(docker(t, "image", "inspect", "-f", "{{json .Config.Healthcheck}}", baseImage)), &hc); err != nil {
		t.Fatal(err)
	}
	if strings.Join(hc.Test, " ") != "CMD /usr/local/bin/llamaboot healthcheck" || hc.StartPeriod < 5*time.Minute {
		t.Errorf("the image's HEALTHCHECK: %+v", hc)
	}

	port := freePorts(t, 1)[0]
	cfgDir := t.TempDir()
	cfg := fmt.Sprintf("[instance.control]\nliveness_interval = \"300ms\"\nliveness_timeout = \"200ms\"\nliveness_failures = 2\nrestart = \"never\"\n"+
		"[instance.server]\nhost = \"127.0.0.1\"\n[instance.a.server]\nport = %d\n", port)
	if err := os.WriteFile(filepath.Join(cfgDir, "cfg.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	pkgs := t.TempDir()
	makePackage(t, pkgs, "pkg.tar.gz", "b7104", "")
	c := start(t, "--network", "host", "-v", pkgs+":/pkg:ro", "-v", cfgDir+":/config:ro",
		"-e", "AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT=1", "-e", "AUTO_INFER_LLAMA_CPP_PKG_PATH=/pkg/pkg.tar.gz",
		"-e", "AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "-e", "AUTO_INFER_LLAMA_CPP_CONFIG=/config/cfg.toml",
		"-e", "STANDIN_LOAD_MS=3000", "-e", "STANDIN_HANG_FILE=/tmp/hang",
		"--health-interval", "500ms", "--health-retries", "2", "--health-start-period", "60s", testImage)
	if status, _ := health(t, c); status != "starting" {
		t.Errorf("health %q right after the start, want starting", status)
	}
	waitLogs(t, c, "a started: pid", 30*time.Second)
	// While it loads, the check fails (not counted in the start period).
	testutil.WaitFor(t, "a failed check while loading", 30*time.Second, func() bool {
		status, last := health(t, c)
		return status == "starting" && strings.HasPrefix(last, "not ready: a: starting for")
	})
	if last := waitHealth(t, c, "healthy", 60*time.Second); last != "ready: a\n" {
		t.Errorf("healthy check said %q", last)
	}
	// Wedge its worker loop: /health stays ok, /slots never answers.
	docker(t, "exec", c, "sh", "-c", ": > /tmp/hang")
	last := waitHealth(t, c, "unhealthy", 60*time.Second)
	// Docker may call it unhealthy while its probes fail, before the
	// watchdog has seen enough of them to kill it: the checks then say
	// "not answering", and "hung" once it is killed.
	testutil.WaitFor(t, "a check saying it was killed as hung", 30*time.Second, func() bool {
		_, last = health(t, c)
		return strings.HasPrefix(last, "not ready: a: failed: hung (killed by SIGKILL); not restarting")
	})
	if l := logs(t, c); !strings.Contains(l, "a hung: 2 liveness probe(s) in a row failed") {
		t.Errorf("no hung line in the log:\n%s", l)
	}
}

// TestDockerTimeToHealthy runs the image's HEALTHCHECK as it is (no
// overrides) and measures what docker ps shows: the time from the
// instance's ready line to the container's healthy status. It must come
// within the check's interval and a check's run, not ~30 s later.
func TestDockerTimeToHealthy(t *testing.T) {
	needDocker(t)
	var hc struct{ Interval time.Duration }
	if err := json.Unmarshal([]byte(docker(t, "image", "inspect", "-f", "{{json .Config.Healthcheck}}", baseImage)), &hc); err != nil {
		t.Fatal(err)
	}
	if hc.Interval > 5*time.Second {
		t.Errorf("HEALTHCHECK --interval %s: healthy would come up to that long after ready", hc.Interval)
	}
	port := freePorts(t, 1)[0]
	cfgDir := t.TempDir()
	cfg := fmt.Sprintf("[instance.server]\nhost = \"127.0.0.1\"\n[instance.a.server]\nport = %d\n", port)
	if err := os.WriteFile(filepath.Join(cfgDir, "cfg.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	pkgs := t.TempDir()
	makePackage(t, pkgs, "pkg.tar.gz", "b7105", "")
	c := start(t, "--network", "host", "-v", pkgs+":/pkg:ro", "-v", cfgDir+":/config:ro",
		"-e", "AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT=1", "-e", "AUTO_INFER_LLAMA_CPP_PKG_PATH=/pkg/pkg.tar.gz",
		"-e", "AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "-e", "AUTO_INFER_LLAMA_CPP_CONFIG=/config/cfg.toml",
		"-e", "STANDIN_LOAD_MS=200", testImage)
	waitLogs(t, c, "a ready after", 30*time.Second)
	ready := time.Now()
	waitHealth(t, c, "healthy", 60*time.Second)
	took := time.Since(ready)
	t.Logf("docker ps: healthy %.1fs after the instance was ready (HEALTHCHECK --interval %s)", took.Seconds(), hc.Interval)
	if limit := hc.Interval + 3*time.Second; took > limit {
		t.Errorf("healthy %.1fs after ready, want within %s", took.Seconds(), limit)
	}
}
