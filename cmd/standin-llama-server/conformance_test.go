package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/proc"
	"github.com/llamaboot/llamaboot/internal/testutil"
)

// The stand-in must behave as the real llama-server does wherever
// supervision depends on it. Each test runs the same scenario against
// both: the real build from ../shared/fixtures/real-llama and the
// stand-in built from this package.

var standinBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "standin-")
	if err != nil {
		panic(err)
	}
	standinBin = filepath.Join(dir, "llama-server")
	if b, err := exec.Command("go", "build", "-o", standinBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build the stand-in: %v\n%s", err, b)
		os.Exit(1)
	}
	fmt.Fprint(os.Stderr, testutil.RealLlamaBanner())
	code := m.Run()
	testutil.RemoveExtracted()
	os.RemoveAll(dir)
	os.Exit(code)
}

// flavour is one kind of server under test.
type flavour struct {
	name string
	// start runs it on port with extra flags; long: a model that can
	// generate for a long time.
	start func(t *testing.T, port int, long bool, extra ...string) *server
	// wedge makes its slot loop stuck, as a wedged worker is; the
	// returned func lets it go again.
	wedge func(t *testing.T, s *server) func()
}

// server is a server under test. It runs as our grandchild, under a
// shell that waits for it: were it our child, the freezer's ptrace stops
// would be reported to os/exec's Wait as well, which could take them.
type server struct {
	cmd  *exec.Cmd // the shell
	pid  int       // the server
	out  *testutil.SyncBuffer
	base string
	done chan struct{}
	ws   syscall.WaitStatus
	hang string // the stand-in's hang file
}

func run(t *testing.T, bin string, args, env []string, port int) *server {
	t.Helper()
	s := &server{out: &testutil.SyncBuffer{}, base: fmt.Sprintf("http://127.0.0.1:%d", port), done: make(chan struct{})}
	pidFile := filepath.Join(t.TempDir(), "pid")
	script := `"$0" "$@" & echo $! > "$PIDFILE"; wait $!; st=$?; [ $st -gt 128 ] && kill -s $(kill -l $st) $$; exit $st`
	s.cmd = exec.Command("sh", append([]string{"-c", script, bin}, append(args, "--host", "127.0.0.1", "--port", fmt.Sprint(port))...)...)
	s.cmd.Env = append(append(os.Environ(), env...), "PIDFILE="+pidFile)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = s.cmd.Wait()
		s.ws = s.cmd.ProcessState.Sys().(syscall.WaitStatus)
		close(s.done)
	}()
	t.Cleanup(func() {
		if s.pid > 0 {
			_ = syscall.Kill(s.pid, syscall.SIGKILL)
		}
		_ = s.cmd.Process.Kill()
		<-s.done
	})
	testutil.WaitFor(t, "the server's pid", 10*time.Second, func() bool {
		b, err := os.ReadFile(pidFile)
		if err == nil && len(b) > 1 {
			_, err = fmt.Sscan(string(b), &s.pid)
		}
		return err == nil && s.pid > 0
	})
	testutil.WaitFor(t, "/health 200", 20*time.Second, func() bool { return s.code(t, "/health", "", time.Second) == 200 })
	return s
}

// code is the status of GET path (0: no answer within timeout).
func (s *server) code(t *testing.T, path, key string, timeout time.Duration) int {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+path, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func flavours(t *testing.T) []flavour {
	standin := flavour{name: "stand-in",
		start: func(t *testing.T, port int, long bool, extra ...string) *server {
			hang := filepath.Join(t.TempDir(), "hang")
			env := []string{"STANDIN_LOAD_MS=50", "STANDIN_HANG_FILE=" + hang}
			if long {
				env = append(env, "STANDIN_GEN_MS=60000")
			}
			s := run(t, standinBin, extra, env, port)
			s.hang = hang
			return s
		},
		wedge: func(t *testing.T, s *server) func() {
			if err := os.WriteFile(s.hang, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			return func() {} // it stays wedged
		}}
	all := []flavour{standin}
	real, err := testutil.FindRealLlama()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the real llama-server is missing under CI: %v", err)
		}
		t.Logf("REAL LLAMA-SERVER NOT COMPARED: %v; to compare, %s", err, testutil.RealLlamaHowTo)
		return all
	}
	return append(all, flavour{name: "real",
		start: func(t *testing.T, port int, long bool, extra ...string) *server {
			model := real.Model
			if long {
				model = real.Model64K
			}
			return run(t, testutil.RealServerBinary(t, real), append([]string{"-m", model, "-t", "1"}, extra...), nil, port)
		},
		wedge: func(t *testing.T, s *server) func() {
			f, err := testutil.FreezeThread(s.pid)
			if err != nil {
				t.Fatal(err)
			}
			return func() { _ = f.Thaw() }
		}})
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// With --api-key, everything but /health, /v1/health, /models and
// /v1/models answers 401 without the key: /slots and /metrics too.
func TestConformanceAPIKey(t *testing.T) {
	for _, f := range flavours(t) {
		t.Run(f.name, func(t *testing.T) {
			s := f.start(t, freePort(t), false, "--api-key", "k1,k2", "--metrics")
			for path, want := range map[string]int{"/health": 200, "/v1/health": 200, "/models": 200, "/v1/models": 200,
				"/slots": 401, "/metrics": 401, "/props": 401} {
				if got := s.code(t, path, "", 5*time.Second); got != want {
					t.Errorf("GET %s without a key: %d, want %d", path, got, want)
				}
			}
			for _, path := range []string{"/slots", "/metrics"} {
				if got := s.code(t, path, "k1", 5*time.Second); got != 200 {
					t.Errorf("GET %s with the key: %d", path, got)
				}
			}
			if !strings.Contains(s.out.String(), "unauthorized") {
				t.Errorf("no 'unauthorized' line for the refused requests:\n%s", s.out)
			}
		})
	}
}

// A stuck slot loop: /health answers, /slots never; each abandoned request
// is logged "cancel task"; the main thread burns no CPU.
func TestConformanceStuckLoop(t *testing.T) {
	for _, f := range flavours(t) {
		t.Run(f.name, func(t *testing.T) {
			s := f.start(t, freePort(t), false)
			thaw := f.wedge(t, s)
			defer thaw()
			s.code(t, "/slots", "", 300*time.Millisecond) // wedges the stand-in's loop
			cpu0, ok := proc.ThreadCPU(s.pid, s.pid)
			if !ok {
				t.Fatalf("no CPU time read for %d", s.pid)
			}
			before := strings.Count(s.out.String(), "cancel task")
			for range 3 {
				if got := s.code(t, "/health", "", 2*time.Second); got != 200 {
					t.Errorf("/health while stuck: %d", got)
				}
				if got := s.code(t, "/slots", "", 300*time.Millisecond); got != 0 {
					t.Errorf("/slots answered %d while stuck", got)
				}
			}
			testutil.WaitFor(t, "3 'cancel task' lines", 5*time.Second, func() bool {
				return strings.Count(s.out.String(), "cancel task") >= before+3
			})
			cpu1, _ := proc.ThreadCPU(s.pid, s.pid)
			if cpu1-cpu0 > 20*time.Millisecond {
				t.Errorf("a stuck main thread used %s of CPU", cpu1-cpu0)
			}
		})
	}
}

// SIGTERM: exit 0 when idle; with a request in flight, "cleaning up
// before exit..." and no exit — only SIGKILL ends it.
func TestConformanceSIGTERM(t *testing.T) {
	for _, f := range flavours(t) {
		t.Run(f.name+"/idle", func(t *testing.T) {
			s := f.start(t, freePort(t), false)
			_ = syscall.Kill(s.pid, syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(10 * time.Second):
				t.Fatal("an idle server did not exit on SIGTERM")
			}
			if !s.ws.Exited() || s.ws.ExitStatus() != 0 {
				t.Errorf("idle server on SIGTERM: %v, want exit 0", s.ws)
			}
		})
		t.Run(f.name+"/in-flight", func(t *testing.T) {
			if f.name == "real" {
				testutil.NeedRealLlama64K(t)
			}
			s := f.start(t, freePort(t), true)
			go func() {
				body := `{"prompt":"hello","n_predict":60000,"seed":42,"ignore_eos":true,"grammar":"root ::= [a-z ]*"}`
				resp, err := http.Post(s.base+"/completion", "application/json", strings.NewReader(body))
				if err == nil {
					resp.Body.Close()
				}
			}()
			testutil.WaitFor(t, "the request in flight", 10*time.Second, func() bool {
				return strings.Contains(s.out.String(), "processing")
			})
			_ = syscall.Kill(s.pid, syscall.SIGTERM)
			select {
			case <-s.done:
				t.Fatalf("exited on SIGTERM with a request in flight (%v)", s.ws)
			case <-time.After(3 * time.Second):
			}
			if !strings.Contains(s.out.String(), "cleaning up before exit") {
				t.Errorf("no 'cleaning up before exit' line:\n%s", s.out)
			}
			_ = syscall.Kill(s.pid, syscall.SIGKILL)
			<-s.done
		})
	}
}
