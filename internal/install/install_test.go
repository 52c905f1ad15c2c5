package install

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
	"github.com/llamaboot/llamaboot/internal/fetch"
	"github.com/llamaboot/llamaboot/internal/printer"
)

// writeArchive writes entries as an archive named name in dir and returns its path.
func writeArchive(t testing.TB, dir, name string, f archive.Format, entries []bundlegen.Entry) string {
	t.Helper()
	var buf bytes.Buffer
	if err := bundlegen.Write(&buf, f, entries); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func opts(app, src string) Options {
	return Options{AppDir: app, Source: src, Printer: printer.Discard()}
}

func mustInstall(t testing.TB, o Options) Result {
	t.Helper()
	return mustInstallSteps(t, o, nil)
}

// mustInstallSteps installs, calling afterStep after each step.
func mustInstallSteps(t testing.TB, o Options, afterStep func(string)) Result {
	t.Helper()
	r, err := (&job{Options: o, afterStep: afterStep}).run(context.Background())
	if err != nil {
		t.Fatalf("install %s: %v", o.Source, err)
	}
	return r
}

func readServer(t testing.TB, app string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(app, "llama-cpp", "bin", "llama-server"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var extOf = map[archive.Format]string{
	archive.Tar: ".tar", archive.Gzip: ".tar.gz", archive.Zstd: ".tar.zst", archive.Xz: ".tar.xz", archive.Zip: ".zip",
}

func TestInstallFormatsAndLayouts(t *testing.T) {
	layouts := []struct {
		name    string
		entries []bundlegen.Entry
		layout  string
		tag     string
	}{
		{"release", bundlegen.Release("b7123", []byte("server-release")), LayoutRelease, "b7123"},
		{"bin-at-root", bundlegen.BinLayout("", []byte("server-bin")), LayoutBin, ""},
		{"bin-under-top-dir", bundlegen.BinLayout("llama.cpp-b4567", []byte("server-bin")), LayoutBin, "b4567"},
	}
	for _, f := range []archive.Format{archive.Tar, archive.Gzip, archive.Zstd, archive.Xz, archive.Zip} {
		for _, l := range layouts {
			t.Run(f.String()+"/"+l.name, func(t *testing.T) {
				dir := t.TempDir()
				app := filepath.Join(dir, "app")
				src := writeArchive(t, dir, "pkg"+extOf[f], f, l.entries)
				r := mustInstall(t, opts(app, src))
				m := r.Marker
				if m.Layout != l.layout || m.BuildTag != l.tag || m.Format != f.String() || m.ArchiveName != "pkg"+extOf[f] {
					t.Errorf("marker = %+v, want layout %s tag %q format %s", m, l.layout, l.tag, f)
				}
				if len(m.SHA256) != 64 || m.InstalledAtUnix == 0 || m.SourcePath != src {
					t.Errorf("marker misses old fields: %+v", m)
				}
				server := filepath.Join(app, "llama-cpp", "bin", "llama-server")
				fi, err := os.Stat(server)
				if err != nil || fi.Mode().Perm() != 0o755 {
					t.Fatalf("llama-server: %v mode %v", err, fi.Mode())
				}
				if got, _ := ReadMarker(filepath.Join(app, "llama-cpp")); got.SHA256 != m.SHA256 {
					t.Errorf("marker on disk %q, returned %q", got.SHA256, m.SHA256)
				}
				checkModes(t, filepath.Join(app, "llama-cpp"))
				if l.layout == LayoutRelease {
					target, err := os.Readlink(filepath.Join(app, "llama-cpp", "bin", "libllama.so"))
					if err != nil || target != "libllama.so.0" {
						t.Errorf("libllama.so should stay a symlink to libllama.so.0, got %q %v", target, err)
					}
					if b, err := os.ReadFile(filepath.Join(app, "llama-cpp", "bin", "libllama.so")); err != nil || string(b) != "ELF libllama" {
						t.Errorf("libllama.so does not resolve: %q %v", b, err)
					}
				}
				if _, err := os.Stat(filepath.Join(app, "cache", "pkg"+extOf[f])); err != nil {
					t.Errorf("archive not cached: %v", err)
				}
			})
		}
	}
}

// checkModes asserts dirs and executables are 0755 and other files 0644.
func checkModes(t *testing.T, root string) {
	t.Helper()
	filepath.WalkDir(root+"/", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := d.Info()
		switch {
		case d.IsDir() && fi.Mode().Perm() != 0o755:
			t.Errorf("%s: dir mode %v", p, fi.Mode())
		case d.Type().IsRegular() && fi.Mode().Perm() != 0o755 && fi.Mode().Perm() != 0o644:
			t.Errorf("%s: file mode %v", p, fi.Mode())
		case fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0:
			t.Errorf("%s: special bits kept: %v", p, fi.Mode())
		}
		return nil
	})
}

func TestSecondRunDoesNothing(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	src := writeArchive(t, dir, "llama-b1-bin.tar.gz", archive.Gzip, bundlegen.Release("b1", []byte("one")))
	first := mustInstall(t, opts(app, src))
	cacheBefore, _ := os.Stat(first.Marker.CachePath)

	o := opts(app, src)
	var out bytes.Buffer
	o.Printer = printer.New(&out, &out, "[llama-cpp-pkg]", false)
	r := mustInstallSteps(t, o, func(step string) { t.Errorf("second run did work: reached step %q", step) })
	if !r.UpToDate || r.Marker != first.Marker {
		t.Errorf("second run: UpToDate=%v marker changed=%v", r.UpToDate, r.Marker != first.Marker)
	}
	if lines := strings.Count(out.String(), "\n"); lines != 1 || !strings.Contains(out.String(), "nothing to do") {
		t.Errorf("second run should say so in one line, said %q", out.String())
	}
	cacheAfter, _ := os.Stat(first.Marker.CachePath)
	if !cacheAfter.ModTime().Equal(cacheBefore.ModTime()) {
		t.Error("cache file was rewritten")
	}
}

func TestChangedArchiveUnderSameNameIsInstalled(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	src := writeArchive(t, dir, "llama.tar.gz", archive.Gzip, bundlegen.Release("b1", []byte("old")))
	first := mustInstall(t, opts(app, src))
	writeArchive(t, dir, "llama.tar.gz", archive.Gzip, bundlegen.Release("b2", []byte("new")))
	second := mustInstall(t, opts(app, src))
	if second.UpToDate || second.Marker.SHA256 == first.Marker.SHA256 {
		t.Fatal("changed archive was not reinstalled")
	}
	if got := readServer(t, app); got != "new" {
		t.Errorf("llama-server = %q, want new", got)
	}
	if second.Previous != first.Marker.VersionDir {
		t.Errorf("previous = %q, want %q kept for rollback", second.Previous, first.Marker.VersionDir)
	}
	if _, err := os.Stat(filepath.Join(app, versionsName, first.Marker.VersionDir, "bin", "llama-server")); err != nil {
		t.Errorf("previous bundle not kept: %v", err)
	}
	// A third bundle prunes the first.
	writeArchive(t, dir, "llama.tar.gz", archive.Gzip, bundlegen.Release("b3", []byte("third")))
	mustInstall(t, opts(app, src))
	if got := listVersions(app); len(got) != 2 {
		t.Errorf("versions kept = %v, want current and previous only", got)
	}
}

func TestDamagedInstallIsRepairedFromCache(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	src := writeArchive(t, dir, "llama.tar", archive.Tar, bundlegen.Release("b1", []byte("srv")))
	mustInstall(t, opts(app, src))
	if err := os.Remove(filepath.Join(app, "llama-cpp", "bin", "llama-server")); err != nil {
		t.Fatal(err)
	}
	steps := map[string]bool{}
	o := opts(app, src)
	r := mustInstallSteps(t, o, func(s string) { steps[s] = true })
	if r.UpToDate || readServer(t, app) != "srv" {
		t.Fatal("damaged install not repaired")
	}
	if steps["cached"] {
		t.Error("repair copied the source again although the cache held it")
	}
}

func TestForceAndVerify(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	src := writeArchive(t, dir, "llama.tar.gz", archive.Gzip, bundlegen.Release("b1", []byte("srv")))
	first := mustInstall(t, opts(app, src))

	o := opts(app, src)
	o.Verify = true
	if r := mustInstall(t, o); !r.UpToDate {
		t.Error("--verify on an unchanged source should find it up to date")
	}
	o = opts(app, src)
	o.Force = true
	r := mustInstall(t, o)
	if r.UpToDate || r.Marker.VersionDir == first.Marker.VersionDir {
		t.Errorf("--force did not reinstall: %+v", r)
	}
	if readServer(t, app) != "srv" {
		t.Error("reinstall lost llama-server")
	}
}

func TestChecksumPin(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	good := writeArchive(t, dir, "good.tar.gz", archive.Gzip, bundlegen.Release("b1", []byte("good")))
	mustInstall(t, opts(app, good))
	other := writeArchive(t, dir, "other.tar.gz", archive.Gzip, bundlegen.Release("b2", []byte("other")))
	o := opts(app, other)
	o.SHA256 = strings.Repeat("ab", 32)
	_, err := Install(context.Background(), o)
	var ie *InputError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("want checksum mismatch input error, got %v", err)
	}
	if readServer(t, app) != "good" {
		t.Error("mismatching bundle was activated")
	}
	assertNoLeftovers(t, app)

	sum, _ := fetch.SumFile(other)
	o.SHA256 = strings.ToUpper(sum)
	mustInstall(t, o)
	if readServer(t, app) != "other" {
		t.Error("matching pin was not installed")
	}
	o.SHA256 = "xyz"
	if _, err := Install(context.Background(), o); !errors.As(err, &ie) {
		t.Errorf("malformed pin: want input error, got %v", err)
	}
}

func TestLegacyPlainDirIsMigrated(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	legacy := filepath.Join(app, "llama-cpp", "bin")
	if err := os.MkdirAll(legacy, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(legacy, "llama-server"), []byte("legacy"), 0o755)
	os.WriteFile(filepath.Join(app, "llama-cpp", MarkerName), []byte(`{"archive_name":"x.tgz","sha256":"00","installed_at_unix":1}`), 0o644)

	src := writeArchive(t, dir, "new.tar.gz", archive.Gzip, bundlegen.Release("b9", []byte("new")))
	r := mustInstall(t, opts(app, src))
	fi, err := os.Lstat(filepath.Join(app, "llama-cpp"))
	if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Fatalf("llama-cpp should now be a symlink: %v %v", fi.Mode(), err)
	}
	if readServer(t, app) != "new" {
		t.Error("new bundle not active")
	}
	b, err := os.ReadFile(filepath.Join(app, versionsName, r.Previous, "bin", "llama-server"))
	if err != nil || string(b) != "legacy" {
		t.Errorf("legacy bundle not kept for rollback: %q %v", b, err)
	}
}

func TestNoLlamaServerListsTopLevel(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	src := writeArchive(t, dir, "junk.tar.gz", archive.Gzip, []bundlegen.Entry{
		bundlegen.File("docs/readme.txt", 0o644, "x"), bundlegen.File("tools/llama-cli", 0o755, "x"),
	})
	_, err := Install(context.Background(), opts(app, src))
	var ie *InputError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "docs/, tools/") {
		t.Fatalf("want input error listing the top level, got %v", err)
	}
	assertNoLeftovers(t, app)
}

func TestContentBeatsName(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	src := writeArchive(t, dir, "really-a-zstd.zip", archive.Zstd, bundlegen.Release("b1", []byte("z")))
	var out bytes.Buffer
	o := opts(app, src)
	o.Printer = printer.New(&out, &out, "", false)
	mustInstall(t, o)
	if !strings.Contains(out.String(), "named like zip but its content is tar.zst") {
		t.Errorf("no note about the misleading name: %q", out.String())
	}
}

func TestSourceErrors(t *testing.T) {
	dir := t.TempDir()
	notArchive := filepath.Join(dir, "notes.tar.gz")
	os.WriteFile(notArchive, []byte("hello, not an archive at all"), 0o644)
	bz := filepath.Join(dir, "x.tar.bz2")
	os.WriteFile(bz, []byte("BZh91AY&SY"), 0o644)
	for _, c := range []struct{ src, want string }{
		{filepath.Join(dir, "missing.tgz"), "cannot be read"},
		{dir, "is a directory, not a regular file (an archive); if it is a Docker -v mount"},
		{notArchive, "not a supported archive"},
		{bz, "bzip2"},
	} {
		_, err := Install(context.Background(), opts(filepath.Join(dir, "app"), c.src))
		var ie *InputError
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: want input error %q, got %v", c.src, c.want, err)
		}
	}
}

// assertNoLeftovers checks that a failed install left no staging dir, no
// partial cache file and no temporary link.
func assertNoLeftovers(t *testing.T, app string) {
	t.Helper()
	for _, d := range []string{app, filepath.Join(app, versionsName), filepath.Join(app, "cache")} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), stagingPfx) || strings.HasPrefix(e.Name(), ".part-") || strings.HasPrefix(e.Name(), linkTmpPfx) {
				t.Errorf("leftover %s", filepath.Join(d, e.Name()))
			}
		}
	}
}
