package install

import (
	"archive/tar"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
	"github.com/llamaboot/llamaboot/internal/imagegen"
	"github.com/llamaboot/llamaboot/internal/preflight"
)

const realPkg = "../../../shared/fixtures/real-llama/llama-b9596-bin-ubuntu-x64.tar.gz"

// realEntries reads the real llama.cpp build's files as entries under dir,
// leaving out those whose base name starts with one of skip.
func realEntries(t *testing.T, dir string, skip ...string) (es, skipped []bundlegen.Entry) {
	t.Helper()
	f, err := os.Open(realPkg)
	if err != nil {
		t.Fatalf("the real fixture is missing: %v", err)
	}
	defer f.Close()
	tmp := t.TempDir()
	root, _ := os.OpenRoot(tmp)
	defer root.Close()
	if _, err := archive.Extract(f, archive.Gzip, root, archive.Limits{}); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(tmp, "llama-b9596")
	ents, _ := os.ReadDir(src)
	for _, e := range ents {
		p := filepath.Join(src, e.Name())
		var en bundlegen.Entry
		if l, err := os.Readlink(p); err == nil {
			en = bundlegen.Symlink(dir+"/"+e.Name(), l)
		} else {
			b, _ := os.ReadFile(p)
			en = bundlegen.Entry{Name: dir + "/" + e.Name(), Type: tar.TypeReg, Mode: 0o755, Body: b}
		}
		out := &es
		for _, s := range skip {
			if strings.HasPrefix(e.Name(), s) {
				out = &skipped
			}
		}
		*out = append(*out, en)
	}
	return es, skipped
}

// TestWithLibs: /app lacks libmtmd, which a lower layer has in a directory
// only the image's ld.so.conf.d names (and a decoy in /usr/lib, which its
// loader would find only after); --with-libs copies the one the image's
// loader finds, links followed, and the bundle then resolves here.
func TestWithLibs(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the real fixture is an x86-64 build")
	}
	app, mtmd := realEntries(t, "app", "libmtmd")
	var lower []bundlegen.Entry
	var real []byte
	for _, e := range mtmd {
		e.Name = "usr/local/lib/special/" + strings.TrimPrefix(e.Name, "app/")
		if e.Type == tar.TypeReg {
			real = e.Body
		}
		lower = append(lower, e)
	}
	lower = append(lower,
		bundlegen.File("etc/ld.so.conf", 0o644, "include /etc/ld.so.conf.d/*.conf\n"),
		bundlegen.File("etc/ld.so.conf.d/special.conf", 0o644, "# vendor libs\n/usr/local/lib/special\n"),
		bundlegen.File("usr/lib/libmtmd.so.0", 0o644, "decoy"))
	build := func(extra ...[]bundlegen.Entry) string {
		ls := []*imagegen.Layer{}
		for _, es := range append([][]bundlegen.Entry{lower, app}, extra...) {
			l, err := imagegen.NewLayer(archive.Gzip, es)
			must(t, err)
			ls = append(ls, l)
		}
		img, err := imagegen.Image(here, nil, ls[0], ls[1])
		if len(ls) == 3 {
			img, err = imagegen.Image(here, nil, ls[0], ls[1], ls[2])
		}
		must(t, err)
		dir := filepath.Join(t.TempDir(), "layout")
		must(t, imagegen.WriteLayout(dir, img, ""))
		return "oci:" + dir
	}
	src := build()
	check := func(app string) []preflight.Finding {
		return preflight.Check([]preflight.Target{{Instance: "a", Executable: filepath.Join(InstallDir(app), "bin", "llama-server"), LDLibraryPath: filepath.Join(InstallDir(app), "bin")}}, preflight.System{})
	}

	plain := filepath.Join(t.TempDir(), "app")
	mustInstall(t, opts(plain, src))
	if fs := check(plain); len(fs) == 0 || !strings.Contains(fs[0].Problem, "needs libmtmd.so.0") {
		t.Fatalf("without --with-libs: %v, want libmtmd.so.0 missing", fs)
	}

	with := filepath.Join(t.TempDir(), "app")
	o := opts(with, src)
	o.WithLibs = true
	r := mustInstall(t, o)
	if fs := check(with); len(fs) != 0 {
		t.Fatalf("with --with-libs the bundle still lacks: %v", fs)
	}
	got, err := os.ReadFile(filepath.Join(InstallDir(with), "bin", "libmtmd.so.0"))
	if err != nil || string(got) != string(real) {
		t.Fatalf("libmtmd.so.0 copied is not the image loader's choice (%d bytes, err %v)", len(got), err)
	}
	if r.Marker.ImageLibs != "libmtmd.so.0 <- /usr/local/lib/special/libmtmd.so.0.0.9596" {
		t.Errorf("marker image_libs = %v", r.Marker.ImageLibs)
	}

	// A whiteout of the vendor dir in an upper layer: the image's loader
	// would now find the decoy in /usr/lib, and so does --with-libs.
	wo := filepath.Join(t.TempDir(), "app")
	o = opts(wo, build([]bundlegen.Entry{bundlegen.File("usr/local/lib/.wh.special", 0o644, "")}))
	o.WithLibs = true
	mustInstall(t, o)
	if got, _ := os.ReadFile(filepath.Join(InstallDir(wo), "bin", "libmtmd.so.0")); string(got) != "decoy" {
		t.Errorf("after the whiteout, copied %d bytes, want the decoy from /usr/lib", len(got))
	}
}
