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
	"io/fs"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
)

// NotFoundError is an executable that does not exist: nothing is installed
// and no llama_cpp_path is set, or it points nowhere.
type NotFoundError struct {
	Instance, Executable string
	Err                  error
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("instance %q: executable %s not found (%v); install a bundle (llamaboot install) or set master.llama_cpp_path", e.Instance, e.Executable, e.Err)
}

// BadInput marks the error as the user's input at fault.
func (e *NotFoundError) BadInput() bool { return true }

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

// Command builds the process for in. env is the base environment
// (os.Environ() in production). The caller starts it and closes the log.
func Command(in config.Instance, env []string, mode Detach) (*exec.Cmd, *os.File, error) {
	exe := in.Executable
	if !strings.ContainsRune(exe, '/') {
		p, err := exec.LookPath(exe)
		if err != nil {
			return nil, nil, &NotFoundError{Instance: in.Name, Executable: exe, Err: err}
		}
		exe = p
	} else if _, err := os.Stat(exe); err != nil {
		return nil, nil, &NotFoundError{Instance: in.Name, Executable: exe, Err: err}
	}
	log, err := OpenLog(in.LogFile)
	if err != nil {
		return nil, nil, fmt.Errorf("instance %q: %w", in.Name, err)
	}
	cmd := exec.Command(exe, in.Cmd...)
	cmd.Env = Environ(env, in, filepath.Dir(exe))
	cmd.Stdout, cmd.Stderr = log, log
	switch mode {
	case OwnSession:
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	default:
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	}
	return cmd, log, nil
}

// LogLinkError is a log file path that is a symbolic link. Log paths such
// as /tmp/llama-server-<name>.log are predictable and opened as root, so a
// link planted there by another user would send server output into any
// file it names.
type LogLinkError struct{ Path string }

func (e *LogLinkError) Error() string {
	return fmt.Sprintf("log file %s is a symbolic link; llamaboot does not write through links in log paths: remove it, or set control.log_file / log_dir to a directory other users cannot write", e.Path)
}

// BadInput marks the error as the user's input at fault.
func (e *LogLinkError) BadInput() bool { return true }

// OpenLog opens a log file for appending, creating its parent dirs. It
// refuses a symbolic link or anything but a regular file at path, and
// creates the file 0644 whatever the umask (so non-root users can read it).
func OpenLog(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create log dir for %s: %w", path, err)
	}
	// O_NONBLOCK: a FIFO planted at path must not hang us; it is refused below.
	const flags = os.O_WRONLY | os.O_APPEND | syscall.O_NOFOLLOW | syscall.O_NONBLOCK
	f, err := os.OpenFile(path, flags|os.O_CREATE|os.O_EXCL, 0o644)
	created := err == nil
	if errors.Is(err, fs.ErrExist) {
		f, err = os.OpenFile(path, flags, 0)
	}
	if errors.Is(err, syscall.ELOOP) {
		return nil, &LogLinkError{Path: path}
	}
	if err != nil {
		if fi, lerr := os.Lstat(path); lerr == nil && !fi.Mode().IsRegular() {
			return nil, notRegular(path, fi.Mode())
		}
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = notRegular(path, fi.Mode())
	} else if err == nil && created {
		err = f.Chmod(0o644) // the umask may have narrowed it
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func notRegular(path string, m fs.FileMode) error {
	return fmt.Errorf("log file %s is a %s, not a regular file; remove it or choose another control.log_file", path, fileType(m))
}

func fileType(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// Environ returns env with the instance's changes: CUDA_VISIBLE_DEVICES per
// gpu_ids, and the executable's dir first in LD_LIBRARY_PATH (the bundle's
// libraries sit next to llama-server).
func Environ(env []string, in config.Instance, exeDir string) []string {
	out := make([]string, 0, len(env)+2)
	ld := exeDir
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
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

// ErrExited is returned by WaitReady when the process ended first.
var ErrExited = errors.New("exited before it was ready")

// WaitReady polls url+"/health" until it answers 200, the process exits
// (exited is closed), or timeout passes. 503 means the model is loading.
// It polls every 25 ms for the first seconds, so readiness is seen at
// once, then backs off to 500 ms.
func WaitReady(ctx context.Context, url string, timeout time.Duration, exited <-chan struct{}) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	interval := 25 * time.Millisecond
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start), nil
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
				return time.Since(start), fmt.Errorf("not ready after %s (last: %v)", timeout, lastState(resp, err))
			}
			return time.Since(start), ctx.Err()
		case <-time.After(interval):
		}
	}
}

func lastState(resp *http.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return resp.Status
}

// Tail returns the last n lines of a file, for failure reports.
func Tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const limit = 64 << 10
	fi, _ := f.Stat()
	off := max(0, fi.Size()-limit)
	b := make([]byte, fi.Size()-off)
	n2, _ := f.ReadAt(b, off)
	lines := bytes.Split(bytes.TrimRight(b[:n2], "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
