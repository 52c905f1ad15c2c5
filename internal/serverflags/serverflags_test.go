package serverflags

import (
	"errors"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
)

const sampleHelp = `----- common params -----

-h,    --help, --usage                  print usage and exit
-c,    --ctx-size N                     size of the prompt context (default: 4096)
                                        (env: LLAMA_ARG_CTX_SIZE)
-fa,   --flash-attn [on|off|auto]       set Flash Attention use
--mmap, --no-mmap                       whether to memory-map model (default: enabled)
--override-tensor, -ot <tensor name pattern>=<buffer type>,...
-ngl,  --gpu-layers, --n-gpu-layers N   max. number of layers to store in VRAM
-tb,   --threads-batch N                (default: same as --threads)
-e,    --escape                         process escapes sequences (\n, \t) -- not a flag
`

func TestParse(t *testing.T) {
	got := Parse([]byte(sampleHelp))
	want := []string{"--ctx-size", "--escape", "--flash-attn", "--gpu-layers", "--help", "--mmap", "--n-gpu-layers",
		"--no-mmap", "--override-tensor", "--threads", "--threads-batch", "--usage"}
	if !slices.Equal(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

// openTempDir is a temp dir every user can enter, where the runs of
// --help (as nobody, when the tests run as root) can count themselves.
func openTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o777)
	}
	return dir
}

// fakeServer writes an executable that prints help and counts its runs.
func fakeServer(t *testing.T, dir, help string) (exe, count string) {
	t.Helper()
	exe = filepath.Join(dir, "llama-server")
	count = filepath.Join(dir, "runs")
	script := "#!/bin/sh\necho run >> " + count + "\n[ \"$1\" = --help ] || exit 3\ncat <<'EOF'\n" + help + "EOF\n"
	if err := os.WriteFile(exe, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return exe, count
}

func runs(count string) int {
	b, _ := os.ReadFile(count)
	return strings.Count(string(b), "run")
}

func TestFlagsAreReadOnceAndCachedPerIdentity(t *testing.T) {
	dir := openTempDir(t)
	exe, count := fakeServer(t, dir, sampleHelp)
	r := &Reader{CacheFile: filepath.Join(dir, CacheName), Env: []string{"PATH=/usr/bin:/bin"}}
	for i := range 3 {
		flags, err := r.Flags(exe)
		if err != nil || !slices.Contains(flags, "--ctx-size") {
			t.Fatalf("call %d: %q %v", i, flags, err)
		}
	}
	if n := runs(count); n != 1 {
		t.Errorf("--help ran %d times for one executable, want 1", n)
	}
	// A new process (new Reader) uses the cache file too.
	if _, err := (&Reader{CacheFile: r.CacheFile, Env: r.Env}).Flags(exe); err != nil || runs(count) != 1 {
		t.Errorf("cache file not used: runs %d, %v", runs(count), err)
	}
	// A changed executable (new bundle build) is read again.
	fakeServer(t, dir, sampleHelp+"--new-flag N                            new\n")
	flags, err := r.Flags(exe)
	if err != nil || !slices.Contains(flags, "--new-flag") || runs(count) != 2 {
		t.Errorf("changed executable: runs %d, %q %v", runs(count), flags, err)
	}
	// A damaged cache is rebuilt, not an error.
	os.WriteFile(r.CacheFile, []byte("{not json"), 0o644)
	if _, err := r.Flags(exe); err != nil || runs(count) != 3 {
		t.Errorf("damaged cache: runs %d, %v", runs(count), err)
	}
	if fi, err := os.Stat(r.CacheFile); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("cache file: %v %v", fi, err)
	}
	// No cache dir (plan on a machine without the app dir): still answers.
	nc := &Reader{CacheFile: filepath.Join(dir, "missing", CacheName), Env: r.Env}
	if _, err := nc.Flags(exe); err != nil {
		t.Errorf("without a writable cache: %v", err)
	}
}

func TestFlagsErrors(t *testing.T) {
	dir := openTempDir(t)
	r := &Reader{Env: []string{"PATH=" + dir + ":/usr/bin:/bin"}, Timeout: 500 * time.Millisecond}
	if _, err := r.Flags(filepath.Join(dir, "nope")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing path: %v", err)
	}
	if _, err := (&Reader{Env: []string{"PATH=" + dir}}).Flags("llama-server"); !errors.Is(err, exec.ErrNotFound) {
		t.Errorf("missing on PATH: %v", err)
	}
	exe, _ := fakeServer(t, dir, "usage: nothing useful\n")
	if _, err := r.Flags("llama-server"); err == nil || !strings.Contains(err.Error(), "printed no --flags") {
		t.Errorf("no flags (found on PATH %s): %v", exe, err)
	}
	// An executable that ignores --help (a wrapper starting a server) is
	// stopped at the timeout, and that answer is remembered too.
	hang := filepath.Join(dir, "hang")
	os.WriteFile(hang, []byte("#!/bin/sh\necho run >> "+filepath.Join(dir, "hang-runs")+"\nsleep 30\n"), 0o755)
	cached := &Reader{CacheFile: filepath.Join(dir, CacheName), Env: r.Env, Timeout: r.Timeout}
	for range 2 {
		if _, err := cached.Flags(hang); err == nil || !strings.Contains(err.Error(), "did not finish within 500ms") {
			t.Errorf("hanging --help: %v", err)
		}
	}
	if n := runs(filepath.Join(dir, "hang-runs")); n != 1 {
		t.Errorf("hanging executable ran %d times, want 1 (remembered)", n)
	}
}

func TestParseArgs(t *testing.T) {
	got := ParseArgs([]byte(sampleHelp))
	want := map[string]config.FlagArgs{"--help": config.Switch, "--usage": config.Switch, "--ctx-size": config.Value,
		"--flash-attn": config.OptionalValue, "--mmap": config.Switch, "--no-mmap": config.Switch,
		"--override-tensor": config.Value, "--gpu-layers": config.Value, "--n-gpu-layers": config.Value,
		"--threads-batch": config.Value, "--escape": config.Switch}
	if !maps.Equal(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
	// --threads is only named in a description: known, its args not.
	r := &Reader{Env: []string{"PATH=/usr/bin:/bin"}}
	exe, _ := fakeServer(t, openTempDir(t), sampleHelp)
	flags, err := r.Args(exe)
	if a, ok := flags["--threads"]; err != nil || !ok || a != config.UnknownArgs || flags["--mmap"] != config.Switch {
		t.Errorf("Args: %v %v", flags, err)
	}
}

// TestHelpRunsUnprivileged: llamaboot (root) asks the executable a config
// names for its flags as nobody, never as root: a plan or a check must not
// run a user's wrapper script with root's rights.
func TestHelpRunsUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (CI runs as root)")
	}
	dir := openTempDir(t)
	ids := filepath.Join(dir, "ids")
	exe := filepath.Join(dir, "llama-server")
	os.WriteFile(exe, []byte("#!/bin/sh\nid -u >> "+ids+"\necho '--port N  port'\n"), 0o755)
	if _, err := (&Reader{Env: []string{"PATH=/usr/bin:/bin"}}).Flags(exe); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(ids); strings.TrimSpace(string(b)) != "65534" {
		t.Errorf("--help ran as uid %q, want 65534", b)
	}
	// One nobody cannot run is named as such, not run as root instead.
	private := t.TempDir()
	os.Chmod(private, 0o700)
	exe = filepath.Join(private, "llama-server")
	os.WriteFile(exe, []byte("#!/bin/sh\necho '--port N  port'\n"), 0o755)
	if _, err := (&Reader{}).Flags(exe); err == nil || !strings.Contains(err.Error(), "it is asked as uid 65534, which cannot run it") {
		t.Errorf("unreachable for nobody: %v", err)
	}
}
