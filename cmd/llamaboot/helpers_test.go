package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/testutil"
)

// The tests run the real binaries: llamaboot and the stand-in llama-server,
// built once into a temp dir.
var (
	llamaboot string
	standin   string
	// swapper swaps a user's dirs for links as root works in them
	// (internal/testutil/swapper).
	swapper string
	// defaultApp is the app dir of runs that name none, so no test
	// writes to /soft/app.
	defaultApp string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "llamaboot-e2e-")
	if err != nil {
		panic(err)
	}
	// Other users run the binary too (the control socket's uid check).
	if err := os.Chmod(dir, 0o755); err != nil {
		panic(err)
	}
	defaultApp = filepath.Join(dir, "default-app")
	llamaboot = filepath.Join(dir, "llamaboot")
	standin = filepath.Join(dir, "llama-server")
	swapper = filepath.Join(dir, "swapper")
	for out, pkg := range map[string]string{llamaboot: ".", standin: "../standin-llama-server", swapper: "../../internal/testutil/swapper"} {
		cmd := exec.Command("go", "build", "-buildvcs=auto", "-o", out, pkg) // stamps the commit despite GOFLAGS=-buildvcs=false
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, b)
			os.Exit(1)
		}
	}
	fmt.Fprint(os.Stderr, testutil.RealLlamaBanner())
	code := m.Run()
	fmt.Fprint(os.Stderr, testutil.RealLlamaBanner())
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is a finished llamaboot run.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// cleanEnv is the environment without any AUTO_INFER_* the machine may set,
// with the test app dir unless extra names another.
func cleanEnv(extra ...string) []string {
	env := []string{"AUTO_INFER_APP_DIR=" + defaultApp}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AUTO_INFER_") && !strings.HasPrefix(kv, "STANDIN_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

func runLB(t *testing.T, env []string, args ...string) result {
	t.Helper()
	return runAs(t, nil, env, args...)
}

// runAs runs llamaboot with credentials cred (nil: ours).
func runAs(t *testing.T, cred *syscall.Credential, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(llamaboot, args...)
	cmd.Env = cleanEnv(env...)
	if cred != nil {
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, what, timeout, cond)
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// freePorts returns n distinct free loopback ports.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie is dead for our purposes but still listed: state Z.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}
