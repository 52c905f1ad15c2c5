// Package preflight tells, before a server starts, whether the installed
// llama.cpp bundle will load in this container, and on which device: it
// resolves every DT_NEEDED of every executable and of every backend library
// (loaded with dlopen, so not in the executable's own list) the way the
// dynamic loader would — RPATH/RUNPATH with $ORIGIN, $LIB and $PLATFORM,
// LD_LIBRARY_PATH, /etc/ld.so.cache (old and new formats), the default
// directories — compares the highest GLIBC
// version required with the container's C library, and names what follows
// for each instance: it will not start, or a GPU backend will not load and
// it would serve on the CPU.
package preflight

import (
	"debug/elf"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// System is the container as its dynamic loader sees it.
type System struct {
	LDCache     string   // default /etc/ld.so.cache
	DefaultDirs []string // default: the loader's built-in directories
}

func (s System) defaults() System {
	if s.LDCache == "" {
		s.LDCache = "/etc/ld.so.cache"
	}
	if s.DefaultDirs == nil {
		s.DefaultDirs = []string{"/lib64", "/usr/lib64", "/lib", "/usr/lib"}
	}
	return s
}

// Target is one instance's server: its executable and the library path its
// process gets.
type Target struct {
	// Instance names the instance; "" for a bundle checked without a
	// config (doctor alone), whose findings name its executable instead.
	Instance      string
	Executable    string
	LDLibraryPath string
}

// Finding is one thing that will go wrong.
type Finding struct {
	Instance    string
	File        string // the ELF file at fault
	Problem     string
	Consequence string
}

func (f Finding) String() string {
	return fmt.Sprintf("%s: %s: %s", f.File, f.Problem, f.Consequence)
}

// Check resolves every target's executable and backends. Targets sharing
// an executable and library path are resolved once.
func Check(targets []Target, sys System) []Finding {
	sys = sys.defaults()
	cache, _ := readLDCache(sys.LDCache) // no cache: the loader goes on without one too
	var out []Finding
	for _, t := range targets {
		r := &resolver{sys: sys, cache: cache, ldPath: splitPath(t.LDLibraryPath), seen: map[string]*object{}}
		out = append(out, r.target(t)...)
	}
	return out
}

// splitPath splits LD_LIBRARY_PATH as glibc does: at ':' and ';'.
func splitPath(p string) []string {
	return strings.FieldsFunc(p, func(r rune) bool { return r == ':' || r == ';' })
}

// object is one ELF file the loader would map.
type object struct {
	path    string
	class   elf.Class
	machine elf.Machine
	needed  []string
	rpath   []string // as written: dynamic string tokens are expanded by the resolver
	runpath []string
	interp  string // PT_INTERP: the program interpreter an executable names
	glibc   string // highest GLIBC_x.y it needs, "" for none
	defines string // highest GLIBC_x.y it defines (a C library)
}

func readObject(p string) (*object, error) {
	f, err := elf.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	o := &object{path: p, class: f.Class, machine: f.Machine}
	o.needed, _ = f.ImportedLibraries()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			b, err := io.ReadAll(io.LimitReader(prog.Open(), 4096))
			if err == nil {
				o.interp = strings.TrimRight(string(b), "\x00")
			}
		}
	}
	split := func(tag elf.DynTag) []string {
		vals, _ := f.DynString(tag)
		var dirs []string
		for _, v := range vals {
			for _, d := range strings.Split(v, ":") {
				if d != "" {
					dirs = append(dirs, d)
				}
			}
		}
		return dirs
	}
	o.rpath, o.runpath = split(elf.DT_RPATH), split(elf.DT_RUNPATH)
	if needs, err := f.DynamicVersionNeeds(); err == nil {
		for _, n := range needs {
			for _, d := range n.Needs {
				o.glibc = maxGlibc(o.glibc, d.Dep)
			}
		}
	}
	if defs, err := f.DynamicVersions(); err == nil {
		for _, d := range defs {
			o.defines = maxGlibc(o.defines, d.Name)
		}
	}
	return o, nil
}

// maxGlibc returns the higher of two GLIBC_x.y names (either may be "" or
// not a GLIBC version).
func maxGlibc(a, b string) string {
	vb, ok := glibcVersion(b)
	if !ok {
		return a
	}
	va, ok := glibcVersion(a)
	if !ok || less(va, vb) {
		return b
	}
	return a
}

func glibcVersion(s string) ([]int, bool) {
	rest, ok := strings.CutPrefix(s, "GLIBC_")
	if !ok {
		return nil, false
	}
	var v []int
	for _, p := range strings.Split(rest, ".") {
		n, err := strconv.Atoi(p)
		if err != nil {
			return nil, false
		}
		v = append(v, n)
	}
	return v, true
}

func less(a, b []int) bool {
	for i := range max(len(a), len(b)) {
		x, y := 0, 0
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			return x < y
		}
	}
	return false
}

// resolver finds libraries for one process environment.
type resolver struct {
	sys    System
	cache  ldCache
	ldPath []string
	seen   map[string]*object // by path
	lib    string             // what $LIB expands to: see libToken
}

// libToken is what $LIB in an RPATH or RUNPATH expands to under the loader
// at interp: glibc builds it in as its library directory (DL_DST_LIB), the
// directory the loader itself is installed in, relative to / or /usr —
// lib/x86_64-linux-gnu on Debian and Ubuntu, lib64 on Fedora, lib on Arch.
// Without a loader to look at, glibc's own default for the machine.
func libToken(interp string, m elf.Machine) string {
	if interp == "" {
		interp = defaultInterp[m]
	}
	if interp != "" {
		if real, err := filepath.EvalSymlinks(interp); err == nil {
			d := filepath.Dir(real)
			if rest, ok := strings.CutPrefix(d, "/usr/"); ok {
				d = rest
			} else {
				d = strings.TrimPrefix(d, "/")
			}
			if d != "" && d != "." {
				return d
			}
		}
	}
	switch m {
	case elf.EM_X86_64, elf.EM_AARCH64, elf.EM_PPC64, elf.EM_S390, elf.EM_RISCV:
		return "lib64"
	}
	return "lib"
}

// defaultInterp is the program interpreter glibc's executables name, for
// library checks with no executable at hand.
var defaultInterp = map[elf.Machine]string{
	elf.EM_X86_64:  "/lib64/ld-linux-x86-64.so.2",
	elf.EM_AARCH64: "/lib/ld-linux-aarch64.so.1",
}

// platform is what $PLATFORM expands to for an object of machine m: the
// kernel's AT_PLATFORM, as glibc passes it on ("" when not known here,
// and the loader drops a path that names it).
func platform(m elf.Machine) string {
	switch m {
	case elf.EM_X86_64:
		return "x86_64"
	case elf.EM_AARCH64:
		return "aarch64"
	}
	return ""
}

// expandDST expands the dynamic string tokens of one RPATH or RUNPATH
// element of o, as glibc's loader does: $ORIGIN (o's directory), $LIB and
// $PLATFORM, written $NAME (not followed by a letter, digit or '_') or
// ${NAME}; any other '$' stays as it is. ok is false when a token has no
// value here: the loader drops such an element.
func (r *resolver) expandDST(d string, o *object) (string, bool) {
	if !strings.Contains(d, "$") {
		return d, true
	}
	vals := []struct{ name, val string }{
		{"ORIGIN", filepath.Dir(o.path)}, {"PLATFORM", platform(o.machine)}, {"LIB", r.lib},
	}
	var b strings.Builder
	for i := 0; i < len(d); i++ {
		if d[i] != '$' {
			b.WriteByte(d[i])
			continue
		}
		matched := false
		for _, v := range vals {
			if n := dstLen(d[i+1:], v.name); n > 0 {
				if v.val == "" {
					return "", false
				}
				b.WriteString(v.val)
				i += n
				matched = true
				break
			}
		}
		if !matched {
			b.WriteByte('$')
		}
	}
	return b.String(), true
}

// dstLen is how many bytes after a '$' the token name takes in s ($NAME or
// ${NAME}), 0 when s does not start with it (glibc's is_dst).
func dstLen(s, name string) int {
	if strings.HasPrefix(s, "{"+name+"}") {
		return len(name) + 2
	}
	rest, ok := strings.CutPrefix(s, name)
	if !ok {
		return 0
	}
	if rest != "" {
		c := rest[0]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' {
			return 0
		}
	}
	return len(name)
}

// searchDirs expands o's RPATH or RUNPATH elements, leaving out those the
// loader drops.
func (r *resolver) searchDirs(o *object, elems []string) []string {
	var dirs []string
	for _, e := range elems {
		if d, ok := r.expandDST(e, o); ok && d != "" {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// Missing is a library no search found, and the file that needs it.
type Missing struct {
	By, Lib string
}

// Unresolved lists what the ELF files need, directly or through what they
// load, that the loader would not find with ldPath as LD_LIBRARY_PATH:
// each library once, with the first file found needing it.
func Unresolved(files []string, ldPath string, sys System) []Missing {
	sys = sys.defaults()
	cache, _ := readLDCache(sys.LDCache)
	r := &resolver{sys: sys, cache: cache, ldPath: splitPath(ldPath), seen: map[string]*object{}}
	var out []Missing
	said := map[string]bool{}
	for _, f := range files {
		o, err := readObject(f)
		if err != nil {
			continue
		}
		if r.lib == "" || o.interp != "" {
			r.lib = libToken(o.interp, o.machine)
		}
		_, miss := r.closure(o)
		for _, m := range miss {
			if !said[m.Lib] {
				said[m.Lib] = true
				out = append(out, m)
			}
		}
	}
	return out
}

// closure maps root and everything it needs, as the loader would, and
// returns what it maps and what it cannot find.
func (r *resolver) closure(root *object) ([]*object, []Missing) {
	objs := []*object{root}
	var miss []Missing
	bySoname := map[string]bool{}
	for i := 0; i < len(objs); i++ {
		o := objs[i]
		for _, n := range o.needed {
			if bySoname[n] {
				continue // already mapped: the loader reuses it
			}
			dep, ok := r.find(n, o, root)
			if !ok {
				miss = append(miss, Missing{By: o.path, Lib: n})
				bySoname[n] = true
				continue
			}
			bySoname[n] = true
			if !contains(objs, dep) {
				objs = append(objs, dep)
			}
		}
	}
	return objs, miss
}

func contains(objs []*object, o *object) bool {
	for _, x := range objs {
		if x == o {
			return true
		}
	}
	return false
}

// find searches for soname needed by o, in ld.so's order: o's RPATH (when it
// has no RUNPATH) and the executable's, LD_LIBRARY_PATH, o's RUNPATH, the
// cache, the default directories. A candidate of another class or machine
// is passed over, as the loader does.
func (r *resolver) find(soname string, o, root *object) (*object, bool) {
	if strings.Contains(soname, "/") {
		return r.load(soname, o)
	}
	var dirs []string
	if len(o.runpath) == 0 {
		dirs = append(dirs, r.searchDirs(o, o.rpath)...)
		if root != o && len(root.runpath) == 0 {
			dirs = append(dirs, r.searchDirs(root, root.rpath)...)
		}
	}
	dirs = append(dirs, r.ldPath...)
	dirs = append(dirs, r.searchDirs(o, o.runpath)...)
	for _, d := range dirs {
		if dep, ok := r.load(filepath.Join(d, soname), o); ok {
			return dep, true
		}
	}
	if p, ok := r.cache.lookup(soname, o.machine); ok {
		if dep, ok := r.load(p, o); ok {
			return dep, true
		}
	}
	for _, d := range r.sys.DefaultDirs {
		if dep, ok := r.load(filepath.Join(d, soname), o); ok {
			return dep, true
		}
	}
	return nil, false
}

func (r *resolver) load(p string, like *object) (*object, bool) {
	if o, ok := r.seen[p]; ok {
		return o, o != nil && o.class == like.class && o.machine == like.machine
	}
	o, err := readObject(p)
	if err != nil {
		r.seen[p] = nil
		return nil, false
	}
	r.seen[p] = o
	return o, o.class == like.class && o.machine == like.machine
}

// target checks one instance: its executable, then every backend beside it.
func (r *resolver) target(t Target) []Finding {
	exe, err := readObject(t.Executable)
	if err != nil {
		return nil // not an ELF file (a wrapper script): nothing to say from here
	}
	r.lib = libToken(exe.interp, exe.machine)
	var out []Finding
	base := filepath.Base(t.Executable)
	who := "instance " + t.Instance
	startFail := fmt.Sprintf("%s will not start: %s fails", base, who)
	if t.Instance == "" {
		who, startFail = base, base+" will not start"
	}
	if exe.interp != "" {
		if _, ok := r.load(exe.interp, exe); !ok {
			out = append(out, Finding{Instance: t.Instance, File: t.Executable,
				Problem:     fmt.Sprintf("its program interpreter %s (the dynamic loader) is not in this container: a base image without a C library?", exe.interp),
				Consequence: startFail})
		}
	}
	out = append(out, r.check(t, exe, startFail, false)...)
	for _, b := range backends(filepath.Dir(t.Executable)) {
		lib, err := readObject(b)
		if err != nil {
			continue
		}
		kind := backendName(b)
		cons := fmt.Sprintf("the %s backend will not load: %s would run on the CPU", kind, who)
		if kind == "CPU" {
			cons = fmt.Sprintf("the CPU backend will not load: %s may have no device to run on", who)
		}
		out = append(out, r.check(t, lib, cons, kind == "CUDA")...)
	}
	return out
}

// check reports what root's closure lacks, and a GLIBC it needs that the C
// library does not define.
func (r *resolver) check(t Target, root *object, consequence string, cuda bool) []Finding {
	objs, miss := r.closure(root)
	var out []Finding
	for _, m := range miss {
		problem := fmt.Sprintf("needs %s, which is nowhere the loader looks (RUNPATH, LD_LIBRARY_PATH, /etc/ld.so.cache, %s)", m.Lib, strings.Join(r.sys.DefaultDirs, ", "))
		if m.Lib == "libcuda.so.1" || cuda && strings.HasPrefix(m.Lib, "libcuda.so") {
			problem = "needs libcuda.so.1, the NVIDIA driver library, which this container lacks: was it started without GPUs (docker run --gpus all, or the NVIDIA runtime)?"
		}
		out = append(out, Finding{Instance: t.Instance, File: m.By, Problem: problem, Consequence: consequence})
	}
	var libc *object
	need, needBy := "", ""
	for _, o := range objs {
		if filepath.Base(o.path) == "libc.so.6" {
			libc = o
		}
		if m := maxGlibc(need, o.glibc); m != need {
			need, needBy = m, o.path
		}
	}
	if libc != nil && need != "" && libc.defines != "" && maxGlibc(libc.defines, need) != libc.defines {
		out = append(out, Finding{Instance: t.Instance, File: needBy,
			Problem:     fmt.Sprintf("needs %s but the container's C library (%s) has up to %s: built for a newer distribution", need, libc.path, libc.defines),
			Consequence: consequence})
	}
	return out
}

// backends lists the ggml backend libraries beside an executable, which
// ggml loads with dlopen (libggml-base is the core, not a backend).
func backends(dir string) []string {
	matches, _ := filepath.Glob(filepath.Join(dir, "libggml-*.so"))
	var out []string
	for _, m := range matches {
		if filepath.Base(m) != "libggml-base.so" {
			out = append(out, m)
		}
	}
	sort.Strings(out)
	return out
}

func backendName(p string) string {
	k := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), "libggml-"), ".so")
	switch {
	case k == "cuda":
		return "CUDA"
	case k == "hip":
		return "ROCm (HIP)"
	case k == "vulkan":
		return "Vulkan"
	case k == "sycl":
		return "SYCL"
	case strings.HasPrefix(k, "cpu"):
		return "CPU"
	}
	return k
}
