// Command toolbox is the shell and tools of the Docker tests' image, built
// in Go like the stand-in server so that the tests need no host package:
// sh is mvdan.cc/sh's POSIX interpreter, and the few commands the tests run
// are applets here. Run through a link named after an applet, it is that
// applet; `toolbox --install DIR` makes the links. A test that needs a new
// command adds an applet.
package main

import (
	"bufio"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"mvdan.cc/sh/v3/expand"
	"mvdan.cc/sh/v3/interp"
	"mvdan.cc/sh/v3/syntax"
)

// call is one applet run: its arguments (without its name), standard
// streams, and the directory relative paths are taken from.
type call struct {
	args           []string
	stdin          io.Reader
	stdout, errout io.Writer
	dir            string
}

func (c *call) path(p string) string {
	if filepath.IsAbs(p) || c.dir == "" {
		return p
	}
	return filepath.Join(c.dir, p)
}

func (c *call) fail(format string, a ...any) int {
	fmt.Fprintf(c.errout, format+"\n", a...)
	return 1
}

var applets map[string]func(*call) int

func init() {
	applets = map[string]func(*call) int{
		"sh":       sh,
		"sleep":    sleep,
		"cat":      cat,
		"md5sum":   md5sum,
		"ls":       ls,
		"head":     head,
		"readlink": readlink,
		// Shell builtins, also as commands (docker run IMAGE true).
		"true": builtin("true"), "false": builtin("false"), "echo": builtin("echo"),
		"test": builtin("test"), "[": builtin("["),
	}
}

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if name == "toolbox" {
		if len(args) == 2 && args[0] == "--install" {
			os.Exit(install(args[1]))
		}
		if len(args) == 0 {
			fmt.Fprintln(os.Stderr, "usage: toolbox --install DIR | toolbox APPLET ARGS…")
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	f, ok := applets[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "toolbox: no applet %q\n", name)
		os.Exit(127)
	}
	wd, _ := os.Getwd()
	os.Exit(f(&call{args: args, stdin: os.Stdin, stdout: os.Stdout, errout: os.Stderr, dir: wd}))
}

func install(dir string) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for name := range applets {
		if err := os.Symlink(self, filepath.Join(dir, name)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}

// sh runs `sh -c SCRIPT [ARG0 ARGS…]`, `sh FILE [ARGS…]` or a script on
// stdin. Applets run in-process; other commands are executed from PATH.
func sh(c *call) int {
	var src io.Reader = c.stdin
	name, params := "sh", []string(nil)
	switch {
	case len(c.args) >= 2 && c.args[0] == "-c":
		src, name = strings.NewReader(c.args[1]), "sh -c"
		if len(c.args) > 3 {
			params = c.args[3:]
		}
	case len(c.args) >= 1:
		f, err := os.Open(c.path(c.args[0]))
		if err != nil {
			return c.fail("sh: %v", err)
		}
		defer f.Close()
		src, name, params = f, c.args[0], c.args[1:]
	}
	prog, err := syntax.NewParser().Parse(src, name)
	if err != nil {
		fmt.Fprintf(c.errout, "sh: %v\n", err)
		return 2
	}
	opts := []interp.RunnerOption{
		interp.StdIO(c.stdin, c.stdout, c.errout),
		interp.Env(expand.ListEnviron(os.Environ()...)),
		interp.ExecHandlers(inProcess),
		interp.Params(append([]string{"--"}, params...)...),
	}
	if c.dir != "" {
		opts = append(opts, interp.Dir(c.dir))
	}
	r, err := interp.New(opts...)
	if err != nil {
		return c.fail("sh: %v", err)
	}
	return status(r.Run(context.Background(), prog))
}

func status(err error) int {
	if err == nil {
		return 0
	}
	if es, ok := errors.AsType[interp.ExitStatus](err); ok {
		return int(es)
	}
	return 1
}

// inProcess runs applets (but a nested sh) without starting a process.
func inProcess(next interp.ExecHandlerFunc) interp.ExecHandlerFunc {
	return func(ctx context.Context, args []string) error {
		f, ok := applets[args[0]]
		if !ok || args[0] == "sh" {
			return next(ctx, args)
		}
		hc := interp.HandlerCtx(ctx)
		if code := f(&call{args: args[1:], stdin: hc.Stdin, stdout: hc.Stdout, errout: hc.Stderr, dir: hc.Dir}); code != 0 {
			return interp.ExitStatus(uint8(code))
		}
		return nil
	}
}

// builtin runs a shell builtin as a command: NAME "$@".
func builtin(name string) func(*call) int {
	return func(c *call) int {
		return sh(&call{args: append([]string{"-c", name + ` "$@"`, name}, c.args...), stdin: c.stdin, stdout: c.stdout, errout: c.errout, dir: c.dir})
	}
}

// sleep SECONDS (fractions allowed, as GNU and busybox sleep take them).
func sleep(c *call) int {
	var total time.Duration
	for _, a := range c.args {
		f, err := strconv.ParseFloat(strings.TrimSuffix(a, "s"), 64)
		if err != nil || f < 0 {
			return c.fail("sleep: invalid time %q", a)
		}
		total += time.Duration(f * float64(time.Second))
	}
	time.Sleep(total)
	return 0
}

// each opens every file argument (stdin without any) in turn.
func each(c *call, files []string, f func(name string, r io.Reader) error) int {
	if len(files) == 0 {
		files = []string{"-"}
	}
	code := 0
	for _, name := range files {
		var err error
		if name == "-" {
			err = f(name, c.stdin)
		} else {
			var fh *os.File
			if fh, err = os.Open(c.path(name)); err == nil {
				err = f(name, fh)
				fh.Close()
			}
		}
		if err != nil {
			fmt.Fprintf(c.errout, "%v\n", err)
			code = 1
		}
	}
	return code
}

func cat(c *call) int {
	return each(c, c.args, func(_ string, r io.Reader) error {
		_, err := io.Copy(c.stdout, r)
		return err
	})
}

func md5sum(c *call) int {
	return each(c, c.args, func(name string, r io.Reader) error {
		h := md5.New()
		if _, err := io.Copy(h, r); err != nil {
			return err
		}
		_, err := fmt.Fprintf(c.stdout, "%s  %s\n", hex.EncodeToString(h.Sum(nil)), name)
		return err
	})
}

// ls [DIR|FILE…]: names, one a line, sorted.
func ls(c *call) int {
	args := slices.DeleteFunc(slices.Clone(c.args), func(a string) bool { return strings.HasPrefix(a, "-") })
	if len(args) == 0 {
		args = []string{"."}
	}
	code := 0
	for _, a := range args {
		fi, err := os.Stat(c.path(a))
		if err != nil {
			code = c.fail("ls: %v", err)
			continue
		}
		if !fi.IsDir() {
			fmt.Fprintln(c.stdout, a)
			continue
		}
		entries, err := os.ReadDir(c.path(a))
		if err != nil {
			code = c.fail("ls: %v", err)
			continue
		}
		for _, e := range entries {
			fmt.Fprintln(c.stdout, e.Name())
		}
	}
	return code
}

// head [-N | -n N] [FILE…]
func head(c *call) int {
	n, args := 10, c.args
	for len(args) > 0 && strings.HasPrefix(args[0], "-") && args[0] != "-" {
		v := strings.TrimPrefix(args[0], "-")
		args = args[1:]
		if v == "n" && len(args) > 0 {
			v, args = args[0], args[1:]
		}
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			return c.fail("head: bad count %q", v)
		}
	}
	return each(c, args, func(_ string, r io.Reader) error {
		s := bufio.NewScanner(r)
		s.Buffer(make([]byte, 64<<10), 1<<20)
		for i := 0; i < n && s.Scan(); i++ {
			fmt.Fprintln(c.stdout, s.Text())
		}
		// Read on, so a writer into our pipe is not cut off mid-line.
		io.Copy(io.Discard, r)
		return s.Err()
	})
}

// readlink [-f] LINK
func readlink(c *call) int {
	follow := len(c.args) > 0 && c.args[0] == "-f"
	args := c.args
	if follow {
		args = args[1:]
	}
	if len(args) != 1 {
		return c.fail("usage: readlink [-f] PATH")
	}
	var target string
	var err error
	if follow {
		target, err = filepath.EvalSymlinks(c.path(args[0]))
	} else {
		target, err = os.Readlink(c.path(args[0]))
	}
	if err != nil {
		return 1 // like readlink: silent, status 1
	}
	fmt.Fprintln(c.stdout, target)
	return 0
}
