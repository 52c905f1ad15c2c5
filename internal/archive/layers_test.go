package archive_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
)

// layerModel is what an image's /app holds after its layers, as the OCI
// spec says: path -> "dir" or the file's content.
type layerModel map[string]string

func (m layerModel) removeTree(p string) {
	for k := range m {
		if k == p || strings.HasPrefix(k, p+"/") {
			delete(m, k)
		}
	}
}

// randomLayers generates layers over a small alphabet, so that later
// layers replace, whiteout and opaque what earlier ones wrote, and applies
// each to the model as it goes. Entries outside /app are mixed in.
func randomLayers(rng *rand.Rand) ([][]bundlegen.Entry, layerModel) {
	names := []string{"a", "b", "d", "d/x", "d/y", "d/e", "d/e/z"}
	m := layerModel{}
	var layers [][]bundlegen.Entry
	for l := 0; l < 1+rng.IntN(4); l++ {
		var es []bundlegen.Entry
		used := map[string]bool{}
		// Whiteouts and opaque markers first, as image builders write them.
		for range rng.IntN(3) {
			n := names[rng.IntN(len(names))]
			dir, base := path.Split(n)
			if rng.IntN(3) == 0 && m[n] == "dir" {
				es = append(es, bundlegen.Dir("app/"+n+"/"), bundlegen.File("app/"+n+"/.wh..wh..opq", 0o644, ""))
				used[n] = true
				for k := range m {
					if strings.HasPrefix(k, n+"/") {
						delete(m, k)
					}
				}
				continue
			}
			if dir != "" && m[strings.TrimSuffix(dir, "/")] != "dir" {
				continue // a whiteout under a file or nothing: skip
			}
			if used[n] {
				continue
			}
			es = append(es, bundlegen.File("app/"+dir+".wh."+base, 0o644, ""))
			used[n] = true
			m.removeTree(n)
		}
		for i := range 1 + rng.IntN(5) {
			n := names[rng.IntN(len(names))]
			if used[n] {
				continue
			}
			// Parents as directories first, as real layers have them.
			parts := strings.Split(n, "/")
			ok := true
			for j := 1; j < len(parts); j++ {
				p := strings.Join(parts[:j], "/")
				if used[p] && m[p] != "dir" {
					ok = false
				}
			}
			if !ok {
				continue
			}
			for j := 1; j < len(parts); j++ {
				p := strings.Join(parts[:j], "/")
				if !used[p] {
					if m[p] != "dir" {
						m.removeTree(p)
					}
					es = append(es, bundlegen.Dir("app/"+p+"/"))
					used[p], m[p] = true, "dir"
				}
			}
			used[n] = true
			if rng.IntN(3) == 0 {
				if m[n] != "dir" {
					m.removeTree(n)
				}
				es = append(es, bundlegen.Dir("app/"+n+"/"))
				m[n] = "dir"
			} else {
				m.removeTree(n)
				body := fmt.Sprintf("layer %d entry %d", l, i)
				es = append(es, bundlegen.File("app/"+n, 0o644, body))
				m[n] = body
			}
			if rng.IntN(4) == 0 {
				es = append(es, bundlegen.File("usr/lib/"+parts[len(parts)-1], 0o644, "elsewhere"))
			}
		}
		layers = append(layers, es)
	}
	return layers, m
}

func treeOf(t *testing.T, dir string) layerModel {
	t.Helper()
	got := layerModel{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			got[rel] = "dir"
			return nil
		}
		b, err := os.ReadFile(p)
		got[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestLayersMatchTheOCIModel applies generated layers and compares the
// tree with the model of the OCI layer rules.
func TestLayersMatchTheOCIModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(20, 26))
	for i := range 500 {
		layers, want := randomLayers(rng)
		dst := t.TempDir()
		root, err := os.OpenRoot(dst)
		if err != nil {
			t.Fatal(err)
		}
		l, err := archive.NewLayers(root, "/app", archive.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		for _, es := range layers {
			var buf bytes.Buffer
			if err := bundlegen.Write(&buf, archive.Tar, es); err != nil {
				t.Fatal(err)
			}
			if err := l.Apply(&buf); err != nil {
				t.Fatalf("case %d: %v\nlayers: %v", i, err, describeLayers(layers))
			}
		}
		if _, err := l.Finish(); err != nil {
			t.Fatal(err)
		}
		root.Close()
		got := treeOf(t, dst)
		if fmt.Sprint(sorted(got)) != fmt.Sprint(sorted(want)) {
			t.Fatalf("case %d:\n got  %v\n want %v\nlayers: %v", i, sorted(got), sorted(want), describeLayers(layers))
		}
	}
}

func sorted(m layerModel) []string {
	var s []string
	for k, v := range m {
		s = append(s, k+"="+v)
	}
	sort.Strings(s)
	return s
}

func describeLayers(ls [][]bundlegen.Entry) string {
	var b strings.Builder
	for i, es := range ls {
		fmt.Fprintf(&b, "\n layer %d:", i)
		for _, e := range es {
			fmt.Fprintf(&b, " %c:%s", e.Type, e.Name)
		}
	}
	return b.String()
}

func TestLayersPathAndLimits(t *testing.T) {
	apply := func(prefix string, lim archive.Limits, layers ...[]bundlegen.Entry) (*archive.Layers, error) {
		root, err := os.OpenRoot(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer root.Close()
		l, err := archive.NewLayers(root, prefix, lim)
		if err != nil {
			return nil, err
		}
		for _, es := range layers {
			var buf bytes.Buffer
			if err := bundlegen.Write(&buf, archive.Tar, es); err != nil {
				t.Fatal(err)
			}
			if err := l.Apply(&buf); err != nil {
				return l, err
			}
		}
		return l, nil
	}
	base := []bundlegen.Entry{bundlegen.Dir("usr/"), bundlegen.File("usr/big", 0o644, strings.Repeat("x", 4096)), bundlegen.Dir("app/"), bundlegen.File("app/llama-server", 0o755, "s")}
	l, err := apply("/app", archive.Limits{}, base, []bundlegen.Entry{bundlegen.File(".wh.app", 0o644, "")})
	if err != nil || l.Found() {
		t.Errorf("whiteout of /app: found=%v err=%v, want the dir gone", l.Found(), err)
	}
	l, err = apply("/opt/llama", archive.Limits{}, base)
	if err != nil || l.Found() || strings.Join(l.TopLevel(), ",") != "/app,/usr" {
		t.Errorf("missing path: found=%v tops=%v err=%v", l.Found(), l.TopLevel(), err)
	}
	l, _ = apply("/app", archive.Limits{}, []bundlegen.Entry{bundlegen.Symlink("app", "opt/llama")})
	if l.LinkTarget() != "opt/llama" {
		t.Errorf("app as a symlink: target %q", l.LinkTarget())
	}
	// Bytes read past outside /app count against --max-expanded too: a bomb
	// elsewhere in the image costs no more than one inside it.
	if _, err := apply("/app", archive.Limits{MaxExpanded: 1024}, base); err == nil || !strings.Contains(err.Error(), `"usr/big": the image's layers expand past`) {
		t.Errorf("skipped bytes over the limit: %v", err)
	}
	if _, err := apply("/app", archive.Limits{MaxEntries: 1}, append(base, bundlegen.File("app/lib", 0o644, "l"))); err == nil || !strings.Contains(err.Error(), "more than 1 entries") {
		t.Errorf("entries over the limit: %v", err)
	}
	if _, err := apply("/", archive.Limits{}, base); err == nil {
		t.Error("image path / accepted")
	}
	// A hardlink to a file outside /app cannot be taken.
	if _, err := apply("/app", archive.Limits{}, base, []bundlegen.Entry{{Name: "app/lib", Type: tar.TypeLink, Link: "usr/big"}}); err == nil || !strings.Contains(err.Error(), "lies outside the image's /app") {
		t.Errorf("hardlink out of /app: %v", err)
	}
}

// FuzzLayers feeds arbitrary bytes as two layers: never a panic, never a
// write beside the root, and a refusal is an *archive.Error.
func FuzzLayers(f *testing.F) {
	for _, es := range [][]bundlegen.Entry{
		{bundlegen.Dir("app/"), bundlegen.File("app/llama-server", 0o755, "s"), bundlegen.File("app/.wh.x", 0o644, "")},
		{bundlegen.Symlink("app/d", "."), bundlegen.File("app/d/d/.wh..wh..opq", 0o644, ""), bundlegen.File("app/../etc/x", 0o644, "x")},
		{bundlegen.Symlink("app/up", "../.."), bundlegen.File(".wh.app", 0o644, ""), bundlegen.File("app/up/x", 0o644, "x")},
	} {
		var buf bytes.Buffer
		if err := bundlegen.Write(&buf, archive.Tar, es); err == nil {
			f.Add(buf.Bytes(), len(buf.Bytes())/2)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, cut int) {
		parent := t.TempDir()
		dst := filepath.Join(parent, "root")
		os.Mkdir(dst, 0o755)
		root, err := os.OpenRoot(dst)
		if err != nil {
			t.Fatal(err)
		}
		defer root.Close()
		l, err := archive.NewLayers(root, "/app", archive.Limits{MaxEntries: 1000, MaxBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		l.WithCatalog()
		cut = min(max(cut, 0), len(data))
		for _, layer := range [][]byte{data[:cut], data[cut:]} {
			if err = l.Apply(bytes.NewReader(layer)); err != nil {
				break
			}
		}
		if err == nil {
			_, err = l.Finish()
		}
		var ae *archive.Error
		if err != nil && !errors.As(err, &ae) {
			t.Fatalf("error is not an *archive.Error: %T %v", err, err)
		}
		if entries, _ := os.ReadDir(parent); len(entries) != 1 {
			t.Fatalf("layers wrote beside their root: %v", entries)
		}
	})
}
