// Package launch turns a planned instance into a running llama-server
// process: its environment, its log file, its process group, and readiness
// checks against its /health endpoint.
package launch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/llamaboot/llamaboot/internal/access"
	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/dirs"
	"github.com/llamaboot/llamaboot/internal/fetch"
	"github.com/llamaboot/llamaboot/internal/logfile"
)

// NotFoundError is an executable that does not exist: nothing is installed
// and no llama_cpp_path is set, or it points nowhere.
type NotFoundError struct {
	Instance, Executable string
	Err                  error
	SetAt                config.Pos // where master.llama_cpp_path was set, if it was
	Searched             []string   // files looked for before PATH
	PATH                 string     // the PATH searched
}

func (e *NotFoundError) Error() string {
	if e.SetAt.File != "" {
		return fmt.Sprintf("instance %q: executable %s not found (%v); it is master.llama_cpp_path at %s: correct it, or remove it to use the installed bundle",
			e.Instance, e.Executable, e.Err, e.SetAt)
	}
	var where []string
	for _, s := range e.Searched {
		where = append(where, filepath.Dir(s))
	}
	path := e.PATH
	if path == "" {
		path = "empty"
	}
	return fmt.Sprintf("instance %q: executable %s not found: looked in %s and PATH (%s); install a bundle (llamaboot install, into --app-dir / AUTO_INFER_APP_DIR, default /soft/app) or set master.llama_cpp_path",
		e.Instance, e.Executable, strings.Join(where, ", "), path)
}

// BadInput marks the error as the user's input at fault.
func (e *NotFoundError) BadInput() bool { return true }

func (e *NotFoundError) Unwrap() error { return e.Err }

// Detach selects how a started process relates to us.
type Detach int

const (
	// OwnGroup puts the process in its own process group (supervised: we
	// signal the whole group) and asks the kernel to SIGTERM it if we die.
	OwnGroup Detach = iota
	// OwnSession starts it in a new session, free of us (background = true
	// under plain `run`, like the old launcher's nohup).
	OwnSession
)

// Command builds the process for in, writing to its log file. env is the
// base environment (os.Environ() in production). The caller starts it and
// closes the log.
func Command(in config.Instance, env []string, mode Detach) (*exec.Cmd, *os.File, error) {
	cmd, err := Prepare(in, env, mode)
	if err != nil {
		return nil, nil, err
	}
	log, err := OpenLog(in.LogFile)
	if err != nil {
		return nil, nil, fmt.Errorf("instance %q: %w", in.Name, access.Explain(err, in.LogSetting))
	}
	cmd.Stdout, cmd.Stderr = log, log
	return cmd, log, nil
}

// Prepare builds the process for in without its output: the supervisor
// gives it a pipe to its log sink instead of the file.
func Prepare(in config.Instance, env []string, mode Detach) (*exec.Cmd, error) {
	exe, err := Resolve(in, env)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, in.Cmd...)
	cmd.Env = Environ(env, in, filepath.Dir(exe))
	switch mode {
	case OwnSession:
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	default:
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	}
	return cmd, nil
}

// Resolve finds in's executable: a path as given, a bare name on env's
// PATH. A NotFoundError says where it looked.
func Resolve(in config.Instance, env []string) (string, error) {
	exe := in.Executable
	nf := &NotFoundError{Instance: in.Name, Executable: exe, SetAt: in.ExecutablePos, Searched: in.Searched, PATH: lookupEnv(env, "PATH")}
	if !strings.ContainsRune(exe, '/') {
		for _, dir := range filepath.SplitList(nf.PATH) {
			if dir == "" {
				continue
			}
			p := filepath.Join(dir, exe)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				return p, nil
			}
		}
		nf.Err = exec.ErrNotFound
		return "", nf
	}
	if _, err := os.Stat(exe); err != nil {
		nf.Err = err
		return "", nf
	}
	return exe, nil
}

// MissingExecutables resolves every instance's executable and returns
// the NotFoundErrors of those that do not exist (bad input: the config's
// llama_cpp_path, or nothing installed), joined; nil when all are there.
func MissingExecutables(instances []config.Instance, env []string) error {
	var missing []error
	for _, in := range instances {
		if _, err := Resolve(in, env); err != nil {
			missing = append(missing, err)
		}
	}
	return errors.Join(missing...)
}

func lookupEnv(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val // the last one wins, as for exec
		}
	}
	return v
}

// OpenLog opens a log file for appending, creating its parent dirs. The
// file itself is opened by logfile.Open: never through a symbolic link
// (a *logfile.LinkError names it), regular files only, 0644 when created.
func OpenLog(path string) (*os.File, error) {
	if err := dirs.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err // names the dir: "mkdir /var/log/llama: …"
	}
	return logfile.Open(path)
}

// Environ returns env with the instance's changes: CUDA_VISIBLE_DEVICES per
// gpu_ids, and the executable's dir first in LD_LIBRARY_PATH (the bundle's
// libraries sit next to llama-server). llamaboot's own download tokens are
// not passed on: a server has no use for them, and its /props or a crash
// report should not be able to show them.
func Environ(env []string, in config.Instance, exeDir string) []string {
	out := make([]string, 0, len(env)+2)
	ld := exeDir
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if slices.Contains(SecretEnv, k) || slices.Contains(in.SecretEnv, k) {
			continue
		}
		if strings.HasPrefix(k, "AUTO_INFER_") && fetch.LooksLikeURL(v) {
			// A package URL may carry userinfo or a signed query: the server
			// gets it as llamaboot shows it, redacted.
			kv = k + "=" + fetch.Redact(strings.TrimSpace(v))
		}
		if k == "LD_LIBRARY_PATH" {
			if v != "" {
				ld += ":" + v
			}
			continue
		}
		if _, replaced := in.Env[k]; !replaced {
			out = append(out, kv)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(in.Env)) {
		out = append(out, k+"="+in.Env[k])
	}
	return append(out, "LD_LIBRARY_PATH="+ld)
}

// SecretEnv are the variables holding llamaboot's download credentials:
// not passed to servers.
var SecretEnv = []string{"AUTO_INFER_LLAMA_CPP_PKG_TOKEN", "AUTO_INFER_MODEL_TOKEN", "AUTO_INFER_REGISTRY_AUTH"}

// ErrExited is returned by WaitReady when the process ended first.
var ErrExited = errors.New("exited before it was ready")

// Target is what readiness is checked on: the instance's URL and, when
// known, the process that must be the one answering on Port.
type Target struct {
	URL  string // base URL; /health is appended
	PID  int    // 0: any answer counts
	Port int
}

// TargetOf is the readiness target of an instance started as pid.
func TargetOf(in config.Instance, pid int) Target {
	return Target{URL: in.ProbeURL(), PID: pid, Port: in.Port}
}

// WaitReady polls t.URL+"/health" until it answers 200 from our own
// process, the process exits (exited is closed), or timeout passes
// (0: no limit but ctx). 503 means the model is loading. A 200 counts only
// while t.PID holds the listening socket: another process answering on the
// port is not our server being ready. It polls every 25 ms for the first
// seconds, so readiness is seen at once, then backs off to 500 ms.
func WaitReady(ctx context.Context, t Target, timeout time.Duration, exited <-chan struct{}) (time.Duration, error) {
	start := time.Now()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	client := &http.Client{Timeout: 2 * time.Second}
	interval := 25 * time.Millisecond
	last := "no answer yet"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t.URL+"/health", nil)
		resp, err := client.Do(req)
		switch {
		case err != nil:
			if ctx.Err() == nil { // keep the last real answer, not our own deadline
				last = err.Error()
			}
		default:
			io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			last = resp.Status
			if resp.StatusCode == http.StatusOK {
				if t.PID == 0 || ListensOn(t.PID, t.Port) {
					return time.Since(start), nil
				}
				last = fmt.Sprintf("200 OK, but from another process on port %d (%s), not pid %d", t.Port, PortHolder(t.Port), t.PID)
			}
		}
		if time.Since(start) > 3*time.Second {
			interval = min(interval*2, 500*time.Millisecond)
		}
		select {
		case <-exited:
			return time.Since(start), ErrExited
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return time.Since(start), fmt.Errorf("not ready after %s (last: %s)", timeout, last)
			}
			return time.Since(start), ctx.Err()
		case <-time.After(interval):
		}
	}
}

// Tail returns the last n lines of a log file, for failure reports: read
// as logfile.Tail reads it, so neither a link planted at the name (or one
// another user owns on the way to it) nor a FIFO is read through.
func Tail(path string, n int) string {
	lines, _ := logfile.Tail(path, n)
	return strings.TrimRight(string(bytes.Join(lines, nil)), "\n")
}
