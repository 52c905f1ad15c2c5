package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/control"
	"github.com/llamaboot/llamaboot/internal/testutil"
)

// The CLI runs in-process through run, with its own environment.

type out struct {
	code           int
	stdout, stderr string
}

func call(env map[string]string, args ...string) out {
	var o, e bytes.Buffer
	code := run(append([]string{"llamaboot"}, args...), strings.NewReader(""), &o, &e, func(k string) string { return env[k] })
	return out{code, o.String(), e.String()}
}

func TestVersionAndUsage(t *testing.T) {
	if r := call(nil, "version"); r.code != 0 || !strings.Contains(r.stdout, "llamaboot") {
		t.Errorf("%+v", r)
	}
	for _, op := range []string{"restart", "stop", "start"} {
		r := call(nil, op)
		if r.code != 2 || !strings.Contains(r.stderr, op+" needs one instance name: llamaboot "+op+" NAME (llamaboot status lists them)") {
			t.Errorf("%s without NAME: %+v", op, r)
		}
	}
	if r := call(nil, "status", "--bogus"); r.code != 2 {
		t.Errorf("unknown flag: %+v", r)
	}
}

func TestStatusAndControlWithoutSupervisor(t *testing.T) {
	app := t.TempDir()
	env := map[string]string{"AUTO_INFER_APP_DIR": app}
	r := call(env, "status")
	if r.code != 0 || !strings.Contains(r.stdout, "supervisor: none running") || !strings.Contains(r.stdout, "bundle: none installed") {
		t.Errorf("%+v", r)
	}
	r = call(env, "status", "--json")
	var st control.Status
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil || st.Supervisor != nil || st.Instances == nil {
		t.Errorf("%+v", r)
	}
	r = call(env, "restart", "a")
	if r.code != 1 || !strings.Contains(r.stderr, "no supervisor is running") {
		t.Errorf("%+v", r)
	}
}

// TestEntryInProcess boots `entry` through run with its environment, asks
// the running supervisor through the CLI, and stops it.
func TestEntryInProcess(t *testing.T) {
	app := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "cfg.toml")
	os.WriteFile(cfg, []byte("[instance.a.server]\nport = 1\n"), 0o644)
	env := map[string]string{"AUTO_INFER_APP_DIR": app, "AUTO_INFER_LLAMA_CPP_CONFIG": cfg, "AUTO_INFER_LLAMA_CPP_STRICT": "maybe"}
	var o testutil.SyncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"llamaboot", "entry", "--grace", "1s"}, strings.NewReader(""), &o, &o, func(k string) string { return env[k] })
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(o.String(), "no command given") {
		if time.Now().After(deadline) {
			t.Fatalf("entry did not boot:\n%s", o.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, want := range []string{
		`AUTO_INFER_LLAMA_CPP_STRICT="maybe" is neither 1/true nor 0/false`,
		"AUTO_INFER_LLAMA_CPP_CONFIG is set but AUTO_INFER_LLAMA_CPP_ON_BOOT is not",
	} {
		if !strings.Contains(o.String(), want) {
			t.Errorf("no %q in:\n%s", want, o.String())
		}
	}
	r := call(env, "restart", "nope")
	if r.code != 2 || !strings.Contains(r.stderr, `no instance "nope" is supervised`) {
		t.Errorf("unknown name: %+v", r)
	}
	r = call(env, "stop", "a/../b")
	if r.code != 2 || !strings.Contains(r.stderr, `invalid instance name "a/../b"`) {
		t.Errorf("path name: %+v", r)
	}
	r = call(env, "status")
	if r.code != 0 || !strings.Contains(r.stdout, "supervisor: pid ") || !strings.Contains(r.stdout, "instances: none") {
		t.Errorf("%+v", r)
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d\n%s", code, o.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("entry did not stop")
	}
}
