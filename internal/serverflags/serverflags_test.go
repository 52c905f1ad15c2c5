package serverflags

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
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
	dir := t.TempDir()
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
	dir := t.TempDir()
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
