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
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"syscall"
	"time"

	"github.com/llamaboot/llamaboot/internal/appfile"
	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/launch"
)

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
func ForAppDir(appDir string, env []string) func(exe string) ([]string, error) {
	r := &Reader{CacheFile: filepath.Join(appDir, CacheName), Env: env}
	return r.Flags
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
	Flags []string `json:"flags,omitempty"`
	// Err is why no flags could be read. It is kept too: an executable
	// that ignores --help (a wrapper that starts a server) would otherwise
	// cost the whole timeout on every plan and run.
	Err string `json:"error,omitempty"`
}

type cacheFile struct {
	Entries []entry `json:"entries"`
}

// Flags returns the long flags (with "--") exe accepts. An exe that does
// not exist gives an error wrapping *launch.NotFoundError.
func (r *Reader) Flags(exe string) ([]string, error) {
	path, err := launch.Resolve(config.Instance{Executable: exe}, r.Env)
	if err != nil {
		return nil, err
	}
	id, err := identify(path)
	if err != nil {
		return nil, err
	}
	cache := r.load()
	for _, e := range cache.Entries {
		if e.identity == id {
			if e.Err != "" {
				return nil, errors.New(e.Err + " (remembered; changing the executable retries)")
			}
			return e.Flags, nil
		}
	}
	flags, err := r.help(path)
	e := entry{identity: id, Flags: flags}
	if err != nil {
		e.Err = err.Error()
	}
	cache.Entries = slices.DeleteFunc(cache.Entries, func(e entry) bool { return e.Path == id.Path })
	cache.Entries = append([]entry{e}, cache.Entries...)
	r.save(cache)
	return flags, err
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
func (r *Reader) help(exe string) ([]string, error) {
	timeout := r.Timeout
	if timeout == 0 {
		timeout = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "--help")
	cmd.Env = launch.Environ(r.Env, config.Instance{}, filepath.Dir(exe))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%s --help did not finish within %s", exe, timeout)
	}
	flags := Parse(out.Bytes())
	if len(flags) == 0 {
		if err == nil {
			err = errors.New("it printed no --flags")
		}
		return nil, fmt.Errorf("%s --help: %v; output began: %q", exe, err, head(out.Bytes(), 200))
	}
	return flags, nil
}

func head(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return string(b)
}

// longFlag is a --flag written where help text writes flags: at a line's
// start or after a space, comma or bracket.
var longFlag = regexp.MustCompile(`(?m)(?:^|[\s,(\[|])(--[A-Za-z0-9][A-Za-z0-9-]*)`)

// Parse returns the sorted, distinct long flags in llama-server's --help
// text ("-c,    --ctx-size N", "--mmap, --no-mmap"). Flags named in a
// description are real flags too, so the whole text is read.
func Parse(help []byte) []string {
	var flags []string
	for _, m := range longFlag.FindAllSubmatch(help, -1) {
		flags = append(flags, string(m[1]))
	}
	slices.Sort(flags)
	return slices.Compact(flags)
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
