package preflight

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/llamaboot/llamaboot/internal/archive"
)

const realBundle = "../../../shared/fixtures/real-llama/llama-b9596-bin-ubuntu-x64.tar.gz"

// bundle extracts the real llama.cpp CPU build (ELF files as they ship)
// and returns the directory holding llama-server.
func bundle(t *testing.T) string {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		t.Skip("the real fixture is an x86-64 build")
	}
	f, err := os.Open(realBundle)
	if err != nil {
		t.Fatalf("the real fixture is missing: %v", err)
	}
	defer f.Close()
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := archive.Extract(f, archive.Gzip, root, archive.Limits{}); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "llama-b9596")
}

// edit copies src to dst with one string of its dynamic string table
// replaced by another of the same length: a DT_NEEDED entry or a version
// name, as patchelf would change it.
func edit(t *testing.T, src, dst, from, to string) {
	t.Helper()
	if len(from) != len(to) {
		t.Fatal("edit keeps lengths")
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	needle := append([]byte{0}, append([]byte(from), 0)...)
	if bytes.Count(b, needle) != 1 {
		t.Fatalf("%s holds %q %d times, want once", src, from, bytes.Count(b, needle))
	}
	b = bytes.Replace(b, needle, append([]byte{0}, append([]byte(to), 0)...), 1)
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestRealBundleIsClean(t *testing.T) {
	dir := bundle(t)
	got := Check([]Target{{Instance: "a", Executable: filepath.Join(dir, "llama-server")}}, System{})
	if len(got) != 0 {
		t.Fatalf("the real CPU bundle, which runs here, has findings: %v", got)
	}
}

func TestFindings(t *testing.T) {
	dir := bundle(t)
	exe := filepath.Join(dir, "llama-server")
	check := func(ld string, sys System) []Finding {
		return Check([]Target{{Instance: "g", Executable: exe, LDLibraryPath: ld}}, sys)
	}
	want := func(t *testing.T, fs []Finding, file string, parts ...string) {
		t.Helper()
		for _, f := range fs {
			s := f.String()
			if filepath.Base(f.File) != file {
				continue
			}
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(s, p)
			}
			if ok {
				return
			}
		}
		t.Errorf("no finding on %s saying %q in %v", file, parts, fs)
	}

	// A CUDA backend whose driver library is absent.
	edit(t, filepath.Join(dir, "libggml-cpu.so"), filepath.Join(dir, "libggml-cuda.so"), "libgomp.so.1", "libcuda.so.1")
	fs := check("", System{})
	want(t, fs, "libggml-cuda.so", "needs libcuda.so.1", "started without GPUs", "the CUDA backend will not load: instance g would run on the CPU")
	if len(fs) != 1 {
		t.Errorf("findings beyond the CUDA one: %v", fs)
	}
	// LD_LIBRARY_PATH is searched: a libcuda.so.1 there satisfies it.
	drv := t.TempDir()
	b, _ := os.ReadFile(filepath.Join(dir, "libggml.so.0.14.0"))
	os.WriteFile(filepath.Join(drv, "libcuda.so.1"), b, 0o755)
	if fs := check(drv, System{}); len(fs) != 0 {
		t.Errorf("libcuda.so.1 in LD_LIBRARY_PATH not found: %v", fs)
	}
	os.Remove(filepath.Join(dir, "libggml-cuda.so"))

	// A build for a newer glibc than the container's.
	edit(t, filepath.Join(dir, "libggml-cpu.so"), filepath.Join(dir, "libggml-cpu.so"), "GLIBC_2.34", "GLIBC_9.34")
	want(t, check("", System{}), "libggml-cpu.so", "needs GLIBC_9.34 but the container's C library", "has up to GLIBC_2.", "the CPU backend will not load")

	// A library of the executable's own closure gone: the server cannot start.
	os.Remove(filepath.Join(dir, "libmtmd.so.0.0.9596"))
	want(t, check("", System{}), "libllama-server-impl.so", "needs libmtmd.so.0", "llama-server will not start: instance g fails")

	// An executable whose program interpreter is not here (a base image
	// without a C library) cannot start at all.
	b, _ = os.ReadFile(exe)
	interp := []byte("/lib64/ld-linux-x86-64.so.2")
	if bytes.Count(b, interp) != 1 {
		t.Fatalf("llama-server names its interpreter %d times", bytes.Count(b, interp))
	}
	os.WriteFile(exe, bytes.Replace(b, interp, []byte("/lib64/ld-linux-x86-64.so.9"), 1), 0o755)
	want(t, check("", System{}), "llama-server", "its program interpreter /lib64/ld-linux-x86-64.so.9 (the dynamic loader) is not in this container", "llama-server will not start")
	// The bundle checked alone (doctor without a config) names no instance.
	for _, f := range Check([]Target{{Executable: exe}}, System{}) {
		if strings.Contains(f.String(), "instance") || filepath.Base(f.File) == "llama-server" && f.Consequence != "llama-server will not start" {
			t.Errorf("bundle alone: %q", f)
		}
	}

	// Without the cache, libc (in a multiarch dir) is found only where the
	// default dirs list it.
	fs = Check([]Target{{Instance: "g", Executable: filepath.Join(dir, "llama-cli")}}, System{LDCache: "/nonexistent"})
	want(t, fs, "llama-cli", "needs libc.so.6")
}

// TestLDCacheParse reads a cache built here and the machine's own, checked
// against ldconfig -p.
func TestLDCacheParse(t *testing.T) {
	b := buildCache(map[string][]cacheEntry{
		"libfoo.so.1": {{path: "/lib/i386/libfoo.so.1", flags: flagELFLibc6}, {path: "/lib64/libfoo.so.1", flags: flagELFLibc6 | flagX8664Lib64}},
		"libarm.so":   {{path: "/lib/aarch64/libarm.so", flags: flagELFLibc6 | flagAArch64}},
	})
	c, err := parseLDCache(b)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := c.lookup("libfoo.so.1", elf.EM_X86_64); !ok || p != "/lib64/libfoo.so.1" {
		t.Errorf("libfoo x86-64 = %q %v", p, ok)
	}
	if _, ok := c.lookup("libarm.so", elf.EM_X86_64); ok {
		t.Error("an aarch64 entry served an x86-64 object")
	}
	if _, err := parseLDCache(b[:40]); err == nil {
		t.Error("truncated cache accepted")
	}

	out, err := exec.Command("ldconfig", "-p").Output()
	if err != nil {
		t.Skipf("no ldconfig here: %v", err)
	}
	sys, err := readLDCache("/etc/ld.so.cache")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		name, path, ok := strings.Cut(strings.TrimSpace(line), " => ")
		if !ok || !strings.Contains(name, "x86-64") {
			continue
		}
		soname := strings.Fields(name)[0]
		found := false
		for _, e := range sys[soname] {
			found = found || e.path == path
		}
		if !found {
			t.Errorf("ldconfig -p lists %s => %s, the parser does not", soname, path)
		}
		n++
	}
	if n < 10 {
		t.Errorf("compared only %d entries", n)
	}
}

// buildCache writes the new ld.so.cache format.
func buildCache(libs map[string][]cacheEntry) []byte {
	type ent struct {
		flags      int32
		key, value string
	}
	var es []ent
	for k, vs := range libs {
		for _, v := range vs {
			es = append(es, ent{v.flags, k, v.path})
		}
	}
	strOff := cacheHeaderSize + len(es)*cacheEntrySize
	var strs bytes.Buffer
	add := func(s string) uint32 {
		off := strOff + strs.Len()
		strs.WriteString(s)
		strs.WriteByte(0)
		return uint32(off)
	}
	var buf bytes.Buffer
	buf.WriteString(cacheMagicNew)
	le := binary.LittleEndian
	hdr := make([]byte, cacheHeaderSize-len(cacheMagicNew))
	le.PutUint32(hdr[0:4], uint32(len(es)))
	buf.Write(hdr)
	for _, e := range es {
		rec := make([]byte, cacheEntrySize)
		le.PutUint32(rec[0:4], uint32(e.flags))
		le.PutUint32(rec[4:8], add(e.key))
		le.PutUint32(rec[8:12], add(e.value))
		buf.Write(rec)
	}
	le.PutUint32(buf.Bytes()[24:28], uint32(strs.Len()))
	buf.Write(strs.Bytes())
	return buf.Bytes()
}

func TestDevicesFromLog(t *testing.T) {
	dir := t.TempDir()
	log := func(s string) string {
		p := filepath.Join(dir, "l.log")
		os.WriteFile(p, []byte(s), 0o644)
		return p
	}
	cpu := "warning: no usable GPU found, --gpu-layers option will be ignored\n0.00.011.458 I log_info: verbosity = 3\n0.00.011.466 I device_info:\n0.00.011.476 I   - CPU     : AMD EPYC (24105 MiB, 24105 MiB free)\n0.00.011.581 I system_info: n_threads = 2\n"
	gpu := "0.00.011.466 I device_info:\n0.00.011.470 I   - CUDA0   : NVIDIA A100 (81920 MiB, 80000 MiB free)\n0.00.011.476 I   - CPU     : AMD EPYC (24105 MiB, 24105 MiB free)\n0.00.011.581 I system_info: x\n"
	r, ok := DevicesFromLog(log(cpu))
	if !ok || !r.NoGPU || len(r.Devices) != 1 || r.Devices[0].Name != "CPU" || r.Devices[0].Description != "AMD EPYC (24105 MiB, 24105 MiB free)" {
		t.Errorf("CPU start: %+v %v", r, ok)
	}
	// The last start counts: a GPU start after a CPU one.
	r, ok = DevicesFromLog(log(cpu + "srv stopped\n" + gpu))
	if !ok || r.NoGPU || len(r.Devices) != 2 || r.Devices[0].Name != "CUDA0" {
		t.Errorf("GPU start after a CPU one: %+v %v", r, ok)
	}
	if _, ok := DevicesFromLog(log("starting\n")); ok {
		t.Error("a log without device_info gave devices")
	}
}

// buildOldCache writes the old ld.so.cache format ("ld.so-1.7.0"), with
// newPart (a new-format cache) after its entries when given, as glibc's
// ldconfig wrote both in one file before 2.32. The old entries' strings
// come after newPart.
func buildOldCache(libs map[string][]cacheEntry, newPart []byte) []byte {
	type ent struct {
		flags      int32
		key, value string
	}
	var es []ent
	for k, vs := range libs {
		for _, v := range vs {
			es = append(es, ent{v.flags, k, v.path})
		}
	}
	le := binary.LittleEndian
	end := cacheHeaderSizeOld + len(es)*cacheEntrySizeOld
	var pad int
	if newPart != nil {
		pad = (cacheAlignNew - end%cacheAlignNew) % cacheAlignNew
	}
	var strs bytes.Buffer
	add := func(s string) uint32 {
		off := pad + len(newPart) + strs.Len() // from the end of the entries
		strs.WriteString(s)
		strs.WriteByte(0)
		return uint32(off)
	}
	var buf bytes.Buffer
	buf.WriteString(cacheMagicOld)
	buf.WriteByte(0)
	buf.Write(le.AppendUint32(nil, uint32(len(es))))
	for _, e := range es {
		rec := make([]byte, cacheEntrySizeOld)
		le.PutUint32(rec[0:4], uint32(e.flags))
		le.PutUint32(rec[4:8], add(e.key))
		le.PutUint32(rec[8:12], add(e.value))
		buf.Write(rec)
	}
	buf.Write(make([]byte, pad))
	buf.Write(newPart)
	buf.Write(strs.Bytes())
	return buf.Bytes()
}

// genLibs is a generated cache content: sonames with one to three entries
// each, of several architectures and types, in a generated order.
func genLibs(rng *rand.Rand, tag string) map[string][]cacheEntry {
	flags := []int32{flagELFLibc6 | flagX8664Lib64, flagELFLibc6, flagELFLibc6 | flagAArch64, 1, flagX8664Lib64 | 1}
	libs := map[string][]cacheEntry{}
	for i := range 1 + rng.IntN(40) {
		soname := fmt.Sprintf("lib%d.so.%d", i, rng.IntN(3))
		for k := range 1 + rng.IntN(3) {
			libs[soname] = append(libs[soname], cacheEntry{path: fmt.Sprintf("/%s/d%d/%s", tag, k, soname), flags: flags[rng.IntN(len(flags))]})
		}
	}
	return libs
}

// The old format alone is read entry for entry; in a combined file the
// new part is what counts (as the loader reads it), even where the old
// part says otherwise. Generated caches, each form.
func TestLDCacheOldAndCombinedFormats(t *testing.T) {
	rng := rand.New(rand.NewPCG(20, 4))
	for i := range 300 {
		oldLibs, newLibs := genLibs(rng, "old"), genLibs(rng, "new")
		for _, c := range []struct {
			name string
			b    []byte
			want map[string][]cacheEntry
		}{
			{"old", buildOldCache(oldLibs, nil), oldLibs},
			{"combined", buildOldCache(oldLibs, buildCache(newLibs)), newLibs},
			{"new", buildCache(newLibs), newLibs},
		} {
			got, err := parseLDCache(c.b)
			if err != nil {
				t.Fatalf("%d %s: %v", i, c.name, err)
			}
			if !reflect.DeepEqual(map[string][]cacheEntry(got), c.want) {
				t.Fatalf("%d %s: read %v, want %v", i, c.name, got, c.want)
			}
			// Cut inside its entry table, a cache is refused.
			n := 0
			for _, es := range c.want {
				n += len(es)
			}
			table := cacheHeaderSize + n*cacheEntrySize
			if c.name == "old" {
				table = cacheHeaderSizeOld + n*cacheEntrySizeOld
			}
			if c.name != "combined" {
				if _, err := parseLDCache(c.b[:rng.IntN(table)]); err == nil {
					t.Fatalf("%d %s: a cache cut inside its entries was read", i, c.name)
				}
			}
		}
	}
}

// ldconfig writes the old, the combined and the new format from the same
// libraries (this machine's ld.so.conf); each reads to what `ldconfig -p`
// lists for it, and all three to the same x86-64 lookups.
func TestLDCacheFormatsFromLdconfig(t *testing.T) {
	if _, err := exec.LookPath("ldconfig"); err != nil {
		t.Skipf("no ldconfig here: %v", err)
	}
	dir := t.TempDir()
	var lookups []map[string]string
	for _, format := range []string{"old", "compat", "new"} {
		path := filepath.Join(dir, format+".cache")
		if out, err := exec.Command("ldconfig", "-c", format, "-C", path, "-f", "/etc/ld.so.conf").CombinedOutput(); err != nil {
			t.Fatalf("ldconfig -c %s: %v\n%s", format, err, out)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if format != "new" && !bytes.HasPrefix(b, []byte(cacheMagicOld)) {
			t.Fatalf("ldconfig -c %s wrote no old header", format)
		}
		c, err := parseLDCache(b)
		if err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		out, err := exec.Command("ldconfig", "-p", "-C", path).Output()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, line := range strings.Split(string(out), "\n") {
			name, path, ok := strings.Cut(strings.TrimSpace(line), " => ")
			if !ok || !strings.Contains(name, "x86-64") {
				continue
			}
			soname := strings.Fields(name)[0]
			found := false
			for _, e := range c[soname] {
				found = found || e.path == path
			}
			if !found {
				t.Errorf("%s: ldconfig -p lists %s => %s, the parser does not", format, soname, path)
			}
			n++
		}
		if n < 10 {
			t.Errorf("%s: compared only %d entries", format, n)
		}
		l := map[string]string{}
		for soname := range c {
			l[soname], _ = c.lookup(soname, elf.EM_X86_64)
		}
		lookups = append(lookups, l)
	}
	if !reflect.DeepEqual(lookups[0], lookups[1]) || !reflect.DeepEqual(lookups[1], lookups[2]) {
		t.Errorf("the formats look up differently:\nold %v\ncompat %v\nnew %v", lookups[0], lookups[1], lookups[2])
	}
}

// FuzzParseLDCache: a damaged or hostile cache is refused or read, never
// a panic, and every path it gives comes from inside the file.
func FuzzParseLDCache(f *testing.F) {
	one := map[string][]cacheEntry{"libfoo.so.1": {{path: "/lib64/libfoo.so.1", flags: flagELFLibc6 | flagX8664Lib64}}}
	f.Add(buildCache(one))
	f.Add(buildOldCache(one, nil))
	f.Add(buildOldCache(one, buildCache(one)))
	f.Add([]byte(cacheMagicNew))
	f.Add([]byte(cacheMagicOld))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseLDCache(b)
		if err != nil {
			return
		}
		for k, es := range c {
			for _, e := range es {
				if !bytes.Contains(b, []byte(k)) || !bytes.Contains(b, []byte(e.path)) {
					t.Fatalf("%q => %q is not in the file", k, e.path)
				}
			}
		}
	})
}

// $ORIGIN, $LIB and $PLATFORM in RUNPATH and RPATH, in both the $NAME and
// ${NAME} forms, are expanded as this machine's own loader expands them
// (and a $NAME followed by more of a name is no token): programs built here
// with each form, the library they need placed in each candidate directory
// in turn; preflight finds it exactly when the loader does, which is when
// the program runs.
func TestDSTExpansionMatchesTheLoader(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the expected expansions are x86-64's")
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skipf("no gcc to build the programs (make test-deps installs it): %v", err)
	}
	build := t.TempDir()
	gcc := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
			t.Fatalf("gcc %v: %v\n%s", args, err, out)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(build, "foo.c"), []byte("int foo(void) { return 0; }\n"), 0o644))
	must(os.WriteFile(filepath.Join(build, "main.c"), []byte("int foo(void);\nint main(void) { return foo(); }\n"), 0o644))
	lib := filepath.Join(build, "libfoo.so.1")
	gcc("-shared", "-fPIC", "-Wl,-soname,libfoo.so.1", "-o", lib, filepath.Join(build, "foo.c"))
	must(os.Symlink("libfoo.so.1", filepath.Join(build, "libfoo.so")))

	forms := []struct{ path, dtags string }{
		{"$ORIGIN/../$LIB", "new"}, {"$ORIGIN/../${LIB}", "new"}, {"${ORIGIN}/../$LIB", "old"},
		{"$ORIGIN/$PLATFORM", "new"}, {"$ORIGIN/${PLATFORM}/x", "old"},
		{"$ORIGIN/$LIBX", "new"}, {"$ORIGIN/$PLATFORM_", "new"}, {"/nowhere:$ORIGIN/../$LIB", "new"},
	}
	places := []string{"lib/x86_64-linux-gnu", "lib64", "lib", "bin/x86_64", "bin/x86_64/x", "bin/$LIBX", "bin/$PLATFORM_"}
	for i, f := range forms {
		exe := filepath.Join(build, fmt.Sprintf("main%d", i))
		dtags := "-Wl,--enable-new-dtags"
		if f.dtags == "old" {
			dtags = "-Wl,--disable-new-dtags"
		}
		gcc("-o", exe, filepath.Join(build, "main.c"), "-L"+build, "-lfoo", dtags, "-Wl,-rpath,"+f.path)
		found := 0
		for _, place := range places {
			root := t.TempDir()
			must(os.MkdirAll(filepath.Join(root, "bin"), 0o755))
			must(os.MkdirAll(filepath.Join(root, place), 0o755))
			for _, c := range [][2]string{{exe, "bin/main"}, {lib, place + "/libfoo.so.1"}} {
				b, err := os.ReadFile(c[0])
				must(err)
				must(os.WriteFile(filepath.Join(root, c[1]), b, 0o755))
			}
			run := exec.Command(filepath.Join(root, "bin", "main"))
			run.Env = []string{} // no LD_LIBRARY_PATH
			loader := run.Run() == nil
			missing := Unresolved([]string{filepath.Join(root, "bin", "main")}, "", System{})
			ours := len(missing) == 0
			if ours != loader {
				t.Errorf("RUNPATH/RPATH %q (%s dtags), libfoo.so.1 in %s: the loader finds it: %v, preflight: %v (%v)", f.path, f.dtags, place, loader, ours, missing)
			}
			if loader {
				found++
			}
		}
		if found == 0 {
			t.Errorf("%q: no placement the loader finds; the check would see nothing", f.path)
		}
	}
}
