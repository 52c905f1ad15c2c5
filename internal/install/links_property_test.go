package install

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
)

// The property tests below install archives an attacker could write — links,
// chains of links, links to . and .. and to each other, dirs, files and
// hardlinks over a small alphabet, so that names collide and chains form —
// and check two things no archive may break:
//
//	(a) nothing outside the install's own files changes: a sentinel tree
//	    around the app dir, named with the same alphabet so that an escaping
//	    link finds something to hit, keeps its listing, modes and contents;
//	(b) when the install succeeds, every link in the active bundle resolves
//	    inside it, as the kernel resolves it.

// linkAlphabet are the names archives are built from: the bundle's own
// names and the names of the files installs write, so collisions are likely.
// Each archive draws from a prefix of it, so some use only two or three
// names and chains such as `p -> .` with `p/p/p/x -> ../..` form often.
var linkAlphabet = []string{"p", "bin", "llama-server", "a", "lib", MarkerName + ".tmp", MarkerName, "llama-b1"}

// byteSource turns fuzz input into choices; once it runs dry every choice
// is 0, which still yields a valid (small) archive.
type byteSource struct {
	b     []byte
	names int    // how many of linkAlphabet this archive uses
	via   string // a link to its own dir, which names lean on
}

func (s *byteSource) next(n int) int {
	if len(s.b) == 0 {
		return 0
	}
	c := int(s.b[0])
	s.b = s.b[1:]
	return c % n
}

func (s *byteSource) name(maxDepth int) string {
	parts := make([]string, 1+s.next(maxDepth))
	for i := range parts {
		if s.via != "" && s.next(2) == 0 {
			parts[i] = s.via
			continue
		}
		parts[i] = linkAlphabet[s.next(s.names)]
	}
	return strings.Join(parts, "/")
}

// target makes a link target for a link named name. Most climb no higher
// than the name reads (so a check of the path as written passes them) and
// then descend: through a parent link to its own dir, such a target climbs
// out for real.
func (s *byteSource) target(name string) string {
	switch s.next(16) {
	case 0:
		return "/tmp"
	case 1, 2:
		return "."
	}
	depth := strings.Count(name, "/")
	parts := []string{}
	for range s.next(depth + 2) {
		parts = append(parts, "..")
	}
	for range s.next(3) {
		switch c := s.next(s.names + 2); c {
		case 0:
			parts = append(parts, ".")
		case 1:
			parts = append(parts, "..")
		default:
			parts = append(parts, linkAlphabet[c-2])
		}
	}
	if len(parts) == 0 {
		return linkAlphabet[s.next(s.names)]
	}
	return strings.Join(parts, "/")
}

// randomArchive builds the entries of one hostile archive from src. A
// llama-server is planted in one of the two layouts (sometimes after the
// links that may redirect it) so that installs often get past the layout
// check and reach the steps that follow extraction.
func randomArchive(src *byteSource) []bundlegen.Entry {
	var es []bundlegen.Entry
	src.names = 2 + src.next(len(linkAlphabet)-1)
	if src.next(2) == 0 {
		// A link to its own directory makes every path through it shorter
		// than it reads: the seed of the chain attacks. Links named through
		// it climb no higher than their names read, but for real they do.
		via := []string{"p", "a", "lib"}[src.next(3)]
		dir := []string{"", "bin/", "llama-b1/"}[src.next(3)]
		es = append(es, bundlegen.Symlink(dir+via, "."))
		src.via = via
		for range 1 + src.next(2) {
			r := 1 + src.next(4)
			name := dir + strings.Repeat(via+"/", r) + linkAlphabet[src.next(src.names)]
			target := strings.Repeat("../", 1+src.next(r+strings.Count(dir, "/"))) + linkAlphabet[src.next(src.names)]
			es = append(es, bundlegen.Symlink(name, target))
		}
	}
	n := 1 + src.next(4)
	seen := map[string]bool{}
	// Sometimes no file is planted, so that a link must supply llama-server
	// — the way the first escape found was built.
	serverAt := src.next(n + 1)
	planted := src.next(6) != 0
	for i := 0; i < n+1; i++ {
		if i == serverAt {
			if !planted {
				continue
			}
			name := []string{"bin/llama-server", "llama-b1/llama-server", "llama-b1/bin/llama-server", "llama-server"}[src.next(4)]
			es = append(es, bundlegen.File(name, 0o755, "srv"))
			continue
		}
		name := src.name(6)
		if seen[name] {
			continue // plain duplicates are refused early; the corpus covers them
		}
		seen[name] = true
		switch src.next(6) {
		case 0:
			es = append(es, bundlegen.Dir(name+"/"))
		case 1:
			es = append(es, bundlegen.File(name, 0o644, "f:"+name))
		case 2, 3, 4:
			es = append(es, bundlegen.Symlink(name, src.target(name)))
		case 5:
			es = append(es, bundlegen.Entry{Name: name, Type: tar.TypeLink, Mode: 0o644, Link: src.name(3)})
		}
	}
	return es
}

// sentinelTree plants files, dirs and a link named from the alphabet in
// each dir given, each file mode 0600 with unique content.
func sentinelTree(t testing.TB, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		for _, n := range linkAlphabet {
			if n == "bin" || n == "llama-b1" {
				must(t, os.MkdirAll(filepath.Join(d, n), 0o700))
				must(t, os.WriteFile(filepath.Join(d, n, "llama-server"), []byte("sentinel "+d+n), 0o600))
				continue
			}
			must(t, os.WriteFile(filepath.Join(d, n), []byte("sentinel "+d+n), 0o600))
		}
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// snapshot records every path under dir with its mode and content (or link
// target), skipping the names llamaboot itself owns in the app dir.
func snapshot(t testing.TB, dir, app string) map[string]string {
	t.Helper()
	owned := map[string]bool{"llama-cpp": true, "llama-cpp.versions": true, "cache": true}
	snap := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if filepath.Dir(p) == app && (owned[d.Name()] || strings.HasPrefix(d.Name(), ".")) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		v := fi.Mode().String()
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			v += " -> " + l
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			v += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		snap[p] = v
		return nil
	})
	must(t, err)
	return snap
}

// kernelInside reports whether the link at p, resolved by the kernel,
// lands inside dir. A dangling link is followed as far as the kernel can
// and the rest is taken as written.
func kernelInside(p, dir string) (bool, string) {
	real, err := kernelPath(p)
	if err == nil {
		return within(real, dir), real
	}
	if errors.Is(err, unix.ELOOP) {
		return false, "ELOOP"
	}
	linkDir, err := kernelPath(filepath.Dir(p))
	if err != nil {
		return false, err.Error()
	}
	target, _ := os.Readlink(p)
	cur := linkDir
	if strings.HasPrefix(target, "/") {
		cur = "/"
	}
	parts := strings.Split(target, "/")
	for i, c := range parts {
		next, err := kernelPath(filepath.Join(cur, c))
		if err != nil {
			rest := path.Clean(cur + "/" + strings.Join(parts[i:], "/"))
			return within(rest, dir), rest
		}
		cur = next
	}
	return within(cur, dir), cur
}

// kernelPath opens p (following links) and asks the kernel where it is.
func kernelPath(p string) (string, error) {
	fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	return os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
}

func within(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// checkLinkArchive installs one generated archive and checks the property.
// It reports whether the install succeeded.
func checkLinkArchive(t *testing.T, format archive.Format, es []bundlegen.Entry) bool {
	return checkLinkSource(t, es, func(dir string) string {
		var buf bytes.Buffer
		if err := bundlegen.Write(&buf, format, es); err != nil {
			return "" // the generator made something the writer cannot express
		}
		src := filepath.Join(dir, "pkg"+extOf[format])
		must(t, os.WriteFile(src, buf.Bytes(), 0o644))
		return src
	})
}

// checkLinkSource checks the property for the source write puts in dir
// (an archive, an image), "" when it cannot express es.
func checkLinkSource(t *testing.T, es []bundlegen.Entry, write func(dir string) string) bool {
	dir := t.TempDir()
	app := filepath.Join(dir, "outer", "app")
	must(t, os.MkdirAll(app, 0o755))
	sentinelTree(t, dir, filepath.Join(dir, "outer"), app)
	src := write(dir)
	if src == "" {
		return false
	}
	before := snapshot(t, dir, app)

	_, err := Install(context.Background(), opts(app, src))

	describe := func() string {
		var b strings.Builder
		for _, e := range es {
			fmt.Fprintf(&b, "\n  %c %s", e.Type, e.Name)
			if e.Link != "" {
				fmt.Fprintf(&b, " -> %s", e.Link)
			}
		}
		return b.String()
	}
	after := snapshot(t, dir, app)
	for p, v := range before {
		if after[p] != v {
			t.Fatalf("%s outside the install changed: %q -> %q (install err %v)\narchive:%s", p, v, after[p], err, describe())
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok && p != src {
			t.Fatalf("%s was created outside the install (install err %v)\narchive:%s", p, err, describe())
		}
	}
	if err != nil {
		var bad interface{ BadInput() bool }
		if !errors.As(err, &bad) || !bad.BadInput() {
			t.Fatalf("refusal is not bad input (exit 2): %v\narchive:%s", err, describe())
		}
		return false
	}
	bundle, err := filepath.EvalSymlinks(InstallDir(app))
	must(t, err)
	walkErr := filepath.WalkDir(bundle, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink == 0 {
			return err
		}
		if ok, where := kernelInside(p, bundle); !ok {
			target, _ := os.Readlink(p)
			return fmt.Errorf("installed link %s -> %s resolves to %s, outside the bundle", p, target, where)
		}
		return nil
	})
	if walkErr != nil {
		t.Fatalf("%v\narchive:%s", walkErr, describe())
	}
	return true
}

// TestLinkArchivesProperty runs a bounded number of generated archives in
// every `make test`; FuzzLinkArchives explores further under -fuzz.
func TestLinkArchivesProperty(t *testing.T) {
	n := 1000
	if testing.Short() {
		n = 200
	}
	rng := rand.New(rand.NewPCG(20261126, 9))
	succeeded := 0
	for i := 0; i < n; i++ {
		seed := make([]byte, 64)
		for j := range seed {
			seed[j] = byte(rng.Uint32())
		}
		format := archive.Tar
		if i%3 == 2 {
			format = archive.Zip
		}
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			if checkLinkArchive(t, format, randomArchive(&byteSource{b: seed})) {
				succeeded++
			}
		})
	}
	// The property says nothing if no archive ever gets through: make sure
	// the generator reaches the post-extraction steps often enough.
	if succeeded < n/40 {
		t.Errorf("only %d of %d generated archives installed; the generator no longer exercises the steps after extraction", succeeded, n)
	}
	t.Logf("%d of %d generated archives installed, the rest refused", succeeded, n)
}

func FuzzLinkArchives(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3}, false)
	f.Add([]byte("bin/p -> . chains"), true)
	f.Fuzz(func(t *testing.T, seed []byte, zip bool) {
		format := archive.Tar
		if zip {
			format = archive.Zip
		}
		checkLinkArchive(t, format, randomArchive(&byteSource{b: seed}))
	})
}
