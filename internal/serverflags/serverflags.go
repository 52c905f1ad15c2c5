// Package serverflags learns which command-line flags an llama-server
// executable accepts, by running its --help once per executable and
// remembering the answer in the app dir. config uses the list to catch
// misspelt server keys (ctx_sise) before they reach a command line.
package serverflags

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/llamaboot/llamaboot/internal/appfile"
	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/launch"
)

// Nobody is the uid and gid --help runs as when llamaboot is root.
const Nobody = 65534

// CacheName is the cache file's name in the app dir.
const CacheName = ".llama-server-flags.json"

// maxEntries bounds the cache: a few bundles and llama_cpp_path builds.
const maxEntries = 8

// Reader reads executables' flags.
type Reader struct {
	CacheFile string        // where answers are kept; "" keeps none
	Env       []string      // environment for --help (PATH finds a bare name)
	Timeout   time.Duration // for one --help run; 0 means 20 s
}

// ForAppDir is the config.Options.ServerFlags of a llamaboot using appDir:
// answers cached in appDir, --help run with env.
func ForAppDir(appDir string, env []string) func(exe string) (config.Flags, error) {
	r := &Reader{CacheFile: filepath.Join(appDir, CacheName), Env: env}
	return r.Args
}

// identity is what makes two executables the same for the cache: the real
// path (a new bundle is a new path behind the llama-cpp link), size and
// modification time.
type identity struct {
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	MtimeNS int64  `json:"mtime_ns"`
}

type entry struct {
	identity
	// Version is cacheVersion for entries that know what flags take;
	// older ones are read again.
	Version int                        `json:"version,omitempty"`
	Flags   []string                   `json:"flags,omitempty"`
	Args    map[string]config.FlagArgs `json:"args,omitempty"`
	// Err is why no flags could be read. It is kept too: an executable
	// that ignores --help (a wrapper that starts a server) would otherwise
	// cost the whole timeout on every plan and run.
	Err string `json:"error,omitempty"`
}

type cacheFile struct {
	Entries []entry `json:"entries"`
}

// cacheVersion marks cache entries that record what each flag takes.
const cacheVersion = 2

// Flags returns the long flags (with "--") exe accepts. An exe that does
// not exist gives an error wrapping *launch.NotFoundError.
func (r *Reader) Flags(exe string) ([]string, error) {
	e, err := r.lookup(exe)
	return e.Flags, err
}

// Args returns the long flags exe accepts and what each takes after it
// (config.Options.ServerFlags).
func (r *Reader) Args(exe string) (config.Flags, error) {
	e, err := r.lookup(exe)
	if err != nil {
		return nil, err
	}
	flags := make(config.Flags, len(e.Flags))
	for _, f := range e.Flags {
		flags[f] = e.Args[f] // UnknownArgs when only a description names it
	}
	return flags, nil
}

func (r *Reader) lookup(exe string) (entry, error) {
	path, err := launch.Resolve(config.Instance{Executable: exe}, r.Env)
	if err != nil {
		return entry{}, err
	}
	id, err := identify(path)
	if err != nil {
		return entry{}, err
	}
	cache := r.load()
	for _, e := range cache.Entries {
		if e.identity == id && e.Version == cacheVersion {
			if e.Err != "" {
				return entry{}, errors.New(e.Err + " (remembered; changing the executable retries)")
			}
			return e, nil
		}
	}
	flags, args, err := r.help(path)
	e := entry{identity: id, Version: cacheVersion, Flags: flags, Args: args}
	if err != nil {
		e.Err = err.Error()
	}
	cache.Entries = slices.DeleteFunc(cache.Entries, func(e entry) bool { return e.Path == id.Path })
	cache.Entries = append([]entry{e}, cache.Entries...)
	r.save(cache)
	return e, err
}

func identify(path string) (identity, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return identity{}, err
	}
	fi, err := os.Stat(real)
	if err != nil {
		return identity{}, err
	}
	return identity{Path: real, Size: fi.Size(), MtimeNS: fi.ModTime().UnixNano()}, nil
}

// help runs exe --help with the bundle's libraries on LD_LIBRARY_PATH, as
// the instances will run, and parses what it prints.
func (r *Reader) help(exe string) ([]string, map[string]config.FlagArgs, error) {
	timeout := r.Timeout
	if timeout == 0 {
		timeout = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "--help")
	cmd.Env = launch.Environ(r.Env, config.Instance{}, filepath.Dir(exe))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if os.Geteuid() == 0 {
		// The executable is only asked what it accepts: as nobody, so a
		// config's llama_cpp_path (a script, a wrapper) never runs as root
		// for a plan or a check.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: Nobody, Gid: Nobody, Groups: []uint32{}}
		cmd.Dir = "/"
	}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		return nil, nil, fmt.Errorf("%s --help did not finish within %s", exe, timeout)
	}
	flags := Parse(out.Bytes())
	if len(flags) == 0 {
		if err == nil {
			err = errors.New("it printed no --flags")
		}
		if errors.Is(err, fs.ErrPermission) && cmd.SysProcAttr.Credential != nil {
			err = fmt.Errorf("%w (it is asked as uid %d, which cannot run it: make it and its directories readable and executable by others)", err, Nobody)
		}
		return nil, nil, fmt.Errorf("%s --help: %v; output began: %q", exe, err, head(out.Bytes(), 200))
	}
	return flags, ParseArgs(out.Bytes()), nil
}

func head(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return string(b)
}

// longFlag is a --flag written where help text writes flags: at a line's
// start or after a space, comma or bracket.
var longFlag = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`(?m)(?:^|[\s,(\[|])(--[A-Za-z0-9][A-Za-z0-9-]*)`) })

// Parse returns the sorted, distinct long flags in llama-server's --help
// text ("-c,    --ctx-size N", "--mmap, --no-mmap"). Flags named in a
// description are real flags too, so the whole text is read.
func Parse(help []byte) []string {
	var flags []string
	for _, m := range longFlag().FindAllSubmatch(help, -1) {
		flags = append(flags, string(m[1]))
	}
	slices.Sort(flags)
	return slices.Compact(flags)
}

// helpHead is the head of a flag's entry in --help: its names, then what
// it takes, up to the description ("-c,    --ctx-size N      size of…",
// "--mmap, --no-mmap      whether…", "-fa, --flash-attn [on|off|auto]").
var helpHead = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^ {0,4}((?:--?[A-Za-z0-9][\w-]*,\s*)*--?[A-Za-z0-9][\w-]*)(?: (\S(?:\S| \S)*))?(?:\s{2,}|$)`)
})

var flagName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`--[A-Za-z0-9][\w-]*`) })

// ParseArgs returns what each long flag takes, from the heads of the
// entries of llama-server's --help: nothing (a switch), a value, or an
// optional value ([on|off|auto]). Flags only named in descriptions are not
// in it.
func ParseArgs(help []byte) map[string]config.FlagArgs {
	args := map[string]config.FlagArgs{}
	for _, line := range strings.Split(string(help), "\n") {
		m := helpHead().FindStringSubmatch(line)
		if m == nil {
			continue
		}
		a := config.Switch
		switch {
		case strings.HasPrefix(m[2], "["):
			a = config.OptionalValue
		case m[2] != "":
			a = config.Value
		}
		for _, f := range flagName().FindAllString(m[1], -1) {
			if _, seen := args[f]; !seen {
				args[f] = a
			}
		}
	}
	return args
}

func (r *Reader) load() cacheFile {
	var c cacheFile
	if r.CacheFile == "" {
		return c
	}
	if b, err := appfile.ReadFile(r.CacheFile, 0); err == nil {
		if json.Unmarshal(b, &c) != nil {
			c = cacheFile{} // damaged: rebuilt from the next --help
		}
	}
	return c
}

// save writes the cache whole through a rename, so readers never see half
// of it. A cache that cannot be written (read-only or missing app dir) only
// costs a --help run next time.
func (r *Reader) save(c cacheFile) {
	if r.CacheFile == "" {
		return
	}
	if len(c.Entries) > maxEntries {
		c.Entries = c.Entries[:maxEntries]
	}
	b, err := json.MarshalIndent(c, "", " ")
	if err != nil {
		return
	}
	_ = appfile.Replace(r.CacheFile, b, 0o644)
}
