package main

import (
	"archive/zip"
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
)

// TestEscapesThroughLinksAreRefused replays the reproductions of the
// adversarial review through the built binary: links whose parents are
// links, a marker temp file planted as a link, a bin dir that is a link out,
// a library linked to a host file, link chains that loop. Each must exit 2
// with the entry named, leave the victim's mode and content as they were,
// create nothing outside and keep the old bundle active.
func TestEscapesThroughLinksAreRefused(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	victim := writeFile(t, filepath.Join(dir, "victim"), "host secret\n")
	must(t, os.Chmod(victim, 0o600))
	hostBin := filepath.Join(dir, "hostbin")
	must(t, os.MkdirAll(hostBin, 0o700))
	writeFile(t, filepath.Join(hostBin, "llama-server"), "host binary\n")
	must(t, os.Chmod(filepath.Join(hostBin, "llama-server"), 0o700))

	good := releaseArchive(t, dir, "llama-b7001-bin-ubuntu-x64.tar.gz", "b7001")
	if r := runLB(t, nil, "install", "--app-dir", app, good); r.code != 0 {
		t.Fatal(r)
	}
	active, _ := os.Readlink(filepath.Join(app, "llama-cpp"))

	// From the staging dir app/llama-cpp.versions/.staging-x/, this many
	// ../ reach dir, where the victim lives.
	up := strings.Repeat("../", 3)
	sym := bundlegen.Symlink
	server := bundlegen.File("bin/llama-server", 0o755, "srv")
	cases := []struct {
		name    string
		entries []bundlegen.Entry
		want    string
	}{
		{"issue repro: bin/p -> . then a deep llama-server link", []bundlegen.Entry{
			bundlegen.Dir("bin/"), sym("bin/p", "."),
			sym("bin/"+strings.Repeat("p/", 8)+"llama-server", strings.Repeat("../", 9)+strings.TrimPrefix(victim, "/")),
		}, `symlink target`},
		{"marker temp planted through a self link", []bundlegen.Entry{
			server, sym("p", "."), sym("p/p/p/.installed-from.json.tmp", up+"victim"),
		}, `points outside the bundle`},
		{"bin is a link out to a host dir", []bundlegen.Entry{
			sym("d", "."), sym("d/d/d/bin", up+"hostbin"),
		}, `"d/d/d/bin"`},
		{"library linked to a host file", []bundlegen.Entry{
			server, sym("bin/x", "."), sym("bin/x/x/x/libggml.so", up+"victim"),
		}, `"bin/x/x/x/libggml.so"`},
		{"target climbs through a link created later", []bundlegen.Entry{
			server, sym("bin/a", "q/../../../victim"), sym("bin/q", "."),
		}, `"bin/a"`},
		{"absolute library link", []bundlegen.Entry{server, sym("bin/libggml.so", "/etc/shadow")}, `"bin/libggml.so"`},
		{"loop of links", []bundlegen.Entry{server, sym("bin/l1", "l2"), sym("bin/l2", "l1"), bundlegen.File("bin/l1/x", 0o644, "x")}, `"bin/l1/x"`},
		{"self loop", []bundlegen.Entry{server, sym("bin/me", "me")}, `"bin/me"`},
		// Found by the second review: names llamaboot writes after the audit.
		{"server linked to a helper name", []bundlegen.Entry{bundlegen.File("check-and-run-llama-cpp.sh", 0o755, "#!/bin/sh"), sym("bin/llama-server", "../check-and-run-llama-cpp.sh")}, `"bin/llama-server"`},
		{"server linked to the marker", []bundlegen.Entry{bundlegen.File(".installed-from.json", 0o644, "{}"), sym("bin/llama-server", "../.installed-from.json")}, `"bin/llama-server"`},
		{"helper temp name as a dir", []bundlegen.Entry{server, bundlegen.Dir("check-and-run-llama-cpp.sh.tmp/")}, `check-and-run-llama-cpp.sh.tmp`},
		{"release link dangling once moved into bin", []bundlegen.Entry{
			bundlegen.File("llama-b1/srv", 0o755, "x"), sym("llama-b1/llama-server", "../llama-b1/srv"),
		}, `no longer leads to a file`},
		{"link target of 20000 levels (CPU bomb)", []bundlegen.Entry{server, sym("bin/deep", strings.Repeat("a/", 20000))}, `"bin/deep": its symlink target is longer than 4096 bytes`},
		{"name of 3000 levels", []bundlegen.Entry{server, bundlegen.Dir(strings.Repeat("a/", 3000))}, `longer than 4096 bytes`},
	}
	for _, c := range cases {
		for _, f := range []archive.Format{archive.Tar, archive.Zip} {
			t.Run(c.name+"/"+f.String(), func(t *testing.T) {
				before := listTree(t, dir, app)
				var buf bytes.Buffer
				must(t, bundlegen.Write(&buf, f, c.entries))
				pkg := writeFile(t, filepath.Join(t.TempDir(), "evil."+f.String()), buf.String())
				r := runLB(t, nil, "install", "--app-dir", app, pkg)
				if r.code != 2 || !strings.Contains(r.stdout+r.stderr, c.want) {
					t.Fatalf("want exit 2 naming %s: %v", c.want, r)
				}
				if b, _ := os.ReadFile(victim); string(b) != "host secret\n" {
					t.Errorf("victim content changed: %q", b)
				}
				if fi, _ := os.Stat(victim); fi.Mode().Perm() != 0o600 {
					t.Errorf("victim mode changed: %v", fi.Mode())
				}
				if after := listTree(t, dir, app); after != before {
					t.Errorf("files outside the install changed:\nbefore %s\nafter  %s", before, after)
				}
				if now, _ := os.Readlink(filepath.Join(app, "llama-cpp")); now != active {
					t.Errorf("active bundle changed: %s -> %s", active, now)
				}
			})
		}
	}
}

// listTree lists dir (without the app dir) with modes, for before/after.
func listTree(t *testing.T, dir, skip string) string {
	t.Helper()
	var b strings.Builder
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if p == skip {
			return filepath.SkipDir
		}
		if err == nil {
			fi, _ := d.Info()
			b.WriteString(p + " " + fi.Mode().String() + "\n")
		}
		return nil
	})
	return b.String()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestUmask077StillGivesAUsableInstall: root's umask must not make the
// bundle, the versions dir or the cache private again (old defect D3).
func TestUmask077StillGivesAUsableInstall(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	pkg := releaseArchive(t, dir, "llama-b7001-bin-ubuntu-x64.tar.gz", "b7001")
	var buf bytes.Buffer
	// Parent dirs without entries of their own: created by MkdirAll.
	must(t, bundlegen.Write(&buf, archive.Gzip, []bundlegen.Entry{
		bundlegen.File("pkg/bin/llama-server", 0o755, "srv"), bundlegen.File("pkg/share/doc/x/README", 0o644, "r"),
	}))
	implicit := writeFile(t, filepath.Join(dir, "implicit.tar.gz"), buf.String())
	for _, src := range []string{pkg, implicit} {
		out, err := exec.Command("sh", "-c", `umask 077 && exec "$0" install --app-dir "$1" "$2"`, llamaboot, app, src).CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		filepath.WalkDir(app, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.Type()&os.ModeSymlink != 0 || strings.HasSuffix(p, ".lock") {
				return nil
			}
			fi, _ := d.Info()
			if d.IsDir() && fi.Mode().Perm() != 0o755 || !d.IsDir() && fi.Mode().Perm()&0o044 != 0o044 {
				t.Errorf("%s is %v under umask 077", p, fi.Mode().Perm())
			}
			return nil
		})
	}
}

// TestZipCRCIsChecked flips a bit in llama-server's data inside a zip: the
// zip still opens (its directory is intact) but the member's CRC-32 no
// longer matches, and the install must say so and keep the old bundle.
func TestZipCRCIsChecked(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	good := releaseArchive(t, dir, "llama-b7001-bin-ubuntu-x64.tar.gz", "b7001")
	if r := runLB(t, nil, "install", "--app-dir", app, good); r.code != 0 {
		t.Fatal(r)
	}
	// Stored, not deflated, so the flipped bit reaches the data as is and
	// only the CRC-32 can notice it.
	body := []byte(strings.Repeat("llama-server machine code ", 64))
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	h := &zip.FileHeader{Name: "bin/llama-server", Method: zip.Store}
	h.SetMode(0o755)
	fw, err := zw.CreateHeader(h)
	must(t, err)
	fw.Write(body)
	must(t, zw.Close())
	data := buf.Bytes()
	i := bytes.Index(data, body) + len(body)/2
	data[i] ^= 0x01
	pkg := writeFile(t, filepath.Join(dir, "flipped.zip"), string(data))
	r := runLB(t, nil, "install", "--app-dir", app, pkg)
	if r.code != 2 || !strings.Contains(r.stdout+r.stderr, `"bin/llama-server"`) {
		t.Fatalf("want exit 2 naming bin/llama-server: %v", r)
	}
	if b, _ := os.ReadFile(filepath.Join(app, "llama-cpp", "bin", "llama-server")); bytes.Equal(b, body) || len(b) == 0 {
		t.Error("the damaged server was installed")
	}
}

// TestSecretsNeverPrinted: a package URL with credentials and a presigned
// query, in every form an operator might write it, through entry (the
// container path) and install; no line may show the secrets.
func TestSecretsNeverPrinted(t *testing.T) {
	dir := t.TempDir()
	// A 404 fails at once (no retries), and its error quotes the URL.
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, u := range []string{
		fmt.Sprintf("http://ghp_SECRETUSER@%s/404/llama.tar.gz?X-Amz-Signature=SECRETSIG", host),
		fmt.Sprintf("HTTP://user:SECRETPW@%s/x.tgz?X-Amz-Signature=SECRETSIG", host),
		fmt.Sprintf(" http://user:SECRETPW@%s/x.tgz?sig=SECRETSIG\n", host),
		"ftp://user:SECRETPW@example.invalid/x.tgz?sig=SECRETSIG",
		fmt.Sprintf("http://%s/x.tgz?sig=a SECRETSIG", host),
	} {
		env := []string{"AUTO_INFER_APP_DIR=" + filepath.Join(dir, "app"), "AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT=1",
			"AUTO_INFER_LLAMA_CPP_PKG_PATH=" + u, "AUTO_INFER_LLAMA_CPP_PKG_TOKEN=SECRETTOKEN"}
		for _, args := range [][]string{{"entry", "--", "true"}, {"install"}} {
			r := runLB(t, env, args...)
			if r.code == 0 && args[0] == "install" {
				t.Errorf("%q: install of an unreachable URL succeeded", u)
			}
			for _, s := range []string{"SECRETUSER", "SECRETPW", "SECRETSIG", "SECRETTOKEN"} {
				if strings.Contains(r.stdout+r.stderr, s) {
					t.Errorf("%s with %q printed %s:\n%v", args[0], u, s, r)
				}
			}
		}
	}
}
