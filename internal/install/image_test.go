package install

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
	"github.com/llamaboot/llamaboot/internal/imagegen"
	"github.com/llamaboot/llamaboot/internal/printer"
)

var here = "linux/" + runtime.GOARCH

// under prefixes every entry (and hardlink target, unless it climbs or is
// absolute) with dir/.
func under(dir string, es []bundlegen.Entry) []bundlegen.Entry {
	out := make([]bundlegen.Entry, len(es))
	for i, e := range es {
		e.Name = dir + "/" + e.Name
		if e.Type == tar.TypeLink && !strings.HasPrefix(e.Link, "/") && !strings.HasPrefix(e.Link, "..") {
			e.Link = dir + "/" + e.Link
		}
		out[i] = e
	}
	return out
}

func layerOf(t testing.TB, f archive.Format, es ...bundlegen.Entry) v1.Layer {
	t.Helper()
	l, err := imagegen.NewLayer(f, es)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// cudaLike is a two-layer image in the shape of the official ones: a base
// with system files, then /app with llama-server and its libraries; a third
// layer replaces llama-server, deletes a library (whiteout) and adds one.
func cudaLike(t testing.TB, f archive.Format, server string, labels map[string]string) v1.Image {
	t.Helper()
	base := layerOf(t, f, bundlegen.Dir("usr/"), bundlegen.Dir("usr/lib/"), bundlegen.File("usr/lib/libcudart.so.12", 0o644, "cudart"), bundlegen.Dir("etc/"), bundlegen.File("etc/os-release", 0o644, "ubuntu"))
	app := layerOf(t, f, bundlegen.Dir("app/"), bundlegen.File("app/llama-server", 0o755, "old"), bundlegen.File("app/libggml-cuda.so", 0o644, "cuda"),
		bundlegen.File("app/libstale.so", 0o644, "stale"), bundlegen.Dir("app/sub/"), bundlegen.File("app/sub/gone", 0o644, "x"))
	top := layerOf(t, f, bundlegen.File("app/llama-server", 0o755, server), bundlegen.File("app/.wh.libstale.so", 0o644, ""),
		bundlegen.Dir("app/sub/"), bundlegen.File("app/sub/.wh..wh..opq", 0o644, ""), bundlegen.File("app/sub/kept", 0o644, "new"),
		bundlegen.Symlink("app/libllama.so", "libggml-cuda.so"))
	img, err := imagegen.Image(here, labels, base, app, top)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// sources writes img in every form llamaboot reads and returns the
// references; the registry is closed when the test ends.
func sources(t testing.TB, img v1.Image) map[string]string {
	t.Helper()
	dir := t.TempDir()
	srv := imagegen.Registry()
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	must(t, imagegen.Push(host+"/ggml-org/llama.cpp:server-cuda-b7001", img))
	must(t, imagegen.WriteLayout(filepath.Join(dir, "layout"), img, "server-cuda"))
	must(t, imagegen.TarDir(filepath.Join(dir, "layout"), filepath.Join(dir, "oci.tar")))
	must(t, imagegen.WriteDockerArchive(filepath.Join(dir, "saved.tar"), "llama:b7001", img))
	return map[string]string{
		"docker":         "docker://" + host + "/ggml-org/llama.cpp:server-cuda-b7001",
		"oci":            "oci:" + filepath.Join(dir, "layout"),
		"oci-named":      "oci:" + filepath.Join(dir, "layout") + ":server-cuda",
		"oci-archive":    "oci-archive:" + filepath.Join(dir, "oci.tar"),
		"docker-archive": "docker-archive:" + filepath.Join(dir, "saved.tar"),
		"docker-tagged":  "docker-archive:" + filepath.Join(dir, "saved.tar") + ":llama:b7001",
	}
}

func TestImageSourcesInstallTheAppDir(t *testing.T) {
	for _, f := range []archive.Format{archive.Gzip, archive.Zstd, archive.Tar} {
		img := cudaLike(t, f, "server-b7001", map[string]string{"org.opencontainers.image.version": "b7001"})
		digest, _ := img.Digest()
		for kind, src := range sources(t, img) {
			t.Run(f.String()+"/"+kind, func(t *testing.T) {
				app := filepath.Join(t.TempDir(), "app")
				r := mustInstall(t, opts(app, src))
				bundle := InstallDir(app)
				if got := readServer(t, app); got != "server-b7001" {
					t.Errorf("llama-server = %q, want the top layer's", got)
				}
				for _, gone := range []string{"bin/libstale.so", "bin/sub/gone", "bin/libcudart.so.12", "usr", "etc", "bin/os-release"} {
					if _, err := os.Lstat(filepath.Join(bundle, gone)); err == nil {
						t.Errorf("%s is in the bundle: whiteouts or the /app filter not applied", gone)
					}
				}
				for _, kept := range []string{"bin/libggml-cuda.so", "bin/sub/kept", "bin/libllama.so"} {
					if _, err := os.Stat(filepath.Join(bundle, kept)); err != nil {
						t.Errorf("%s missing: %v", kept, err)
					}
				}
				m := r.Marker
				if m.ImageRef == "" || m.ImageVersion != "b7001" || m.BuildTag != "b7001" || m.Layout != LayoutRelease || m.ImagePath != "/app" {
					t.Errorf("marker = %+v", m)
				}
				if kind != "docker-archive" && kind != "docker-tagged" && m.ImageDigest != digest.String() {
					t.Errorf("marker digest %s, want the manifest's %s", m.ImageDigest, digest)
				}
				again := mustInstall(t, opts(app, src))
				if !again.UpToDate {
					t.Error("second install of the same reference was not 'already installed'")
				}
			})
		}
	}
}

func TestImagePinsAndPlatforms(t *testing.T) {
	amd := cudaLike(t, archive.Gzip, "server-"+runtime.GOARCH, nil)
	other := "linux/s390x"
	otherImg, err := imagegen.Image(other, nil, layerOf(t, archive.Gzip, bundlegen.File("app/llama-server", 0o755, "server-s390x")))
	must(t, err)
	idx, err := imagegen.Index(otherImg, amd)
	must(t, err)
	srv := imagegen.Registry()
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	must(t, imagegen.Push(host+"/llama:multi", idx))
	onlyOther, err := imagegen.Index(otherImg)
	must(t, err)
	must(t, imagegen.Push(host+"/llama:s390x-only", onlyOther))
	idxDigest, _ := idx.Digest()

	app := filepath.Join(t.TempDir(), "app")
	r := mustInstall(t, opts(app, "docker://"+host+"/llama:multi"))
	if readServer(t, app) != "server-"+runtime.GOARCH || r.Marker.ImageDigest != idxDigest.String() || r.Marker.ImageManifest == "" {
		t.Errorf("index install: server %q, marker %+v", readServer(t, app), r.Marker)
	}
	// Pinned by digest, and by --sha256.
	app2 := filepath.Join(t.TempDir(), "app")
	mustInstall(t, opts(app2, "docker://"+host+"/llama@"+idxDigest.String()))
	o := opts(filepath.Join(t.TempDir(), "app"), "docker://"+host+"/llama:multi")
	o.SHA256 = idxDigest.Hex
	mustInstall(t, o)

	badInput := func(t *testing.T, o Options, want ...string) {
		t.Helper()
		_, err := Install(context.Background(), o)
		var bad interface{ BadInput() bool }
		if err == nil || !errors.As(err, &bad) || !bad.BadInput() {
			t.Fatalf("want bad input, got %v", err)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not say %q", err, w)
			}
		}
		if _, err := os.Lstat(InstallDir(o.AppDir)); err == nil && o.AppDir != app {
			t.Errorf("something was activated at %s", InstallDir(o.AppDir))
		}
	}
	t.Run("no-platform", func(t *testing.T) {
		badInput(t, opts(filepath.Join(t.TempDir(), "app"), "docker://"+host+"/llama:s390x-only"), "has no image for "+here, "it holds: linux/s390x")
	})
	t.Run("pin-mismatch", func(t *testing.T) {
		o := opts(filepath.Join(t.TempDir(), "app"), "docker://"+host+"/llama:multi")
		o.SHA256 = strings.Repeat("ab", 32)
		badInput(t, o, "not the pinned sha256:abab", "nothing was installed")
	})
	t.Run("no-app-dir", func(t *testing.T) {
		o := opts(filepath.Join(t.TempDir(), "app"), "docker://"+host+"/llama:multi")
		o.ImagePath = "/opt/llama"
		badInput(t, o, "holds no /opt/llama", "/app, /etc, /usr", "--image-path")
	})
	t.Run("unknown-tag", func(t *testing.T) {
		badInput(t, opts(filepath.Join(t.TempDir(), "app"), "docker://"+host+"/llama:nope"), "no such image")
	})
	for _, src := range []string{"containers-storage:llama:b1", "docker:ghcr.io/ggml-org/llama.cpp:server", "ftp://host/llama.tar.gz", "docker-daemon:llama:b1"} {
		t.Run("unknown-transport/"+src, func(t *testing.T) {
			badInput(t, opts(filepath.Join(t.TempDir(), "app"), src), "unknown transport", "docker://REGISTRY/REPO:TAG", "docker-archive:PATH", "oci:DIR", "oci-archive:PATH")
		})
	}
}

// TestImageSecondBootOffline: once installed, a tag is not re-resolved (the
// registry may be gone); --refresh asks it; a digest reinstalls from the
// blob cache alone.
func TestImageSecondBootOffline(t *testing.T) {
	img := cudaLike(t, archive.Gzip, "srv", nil)
	srv := imagegen.Registry()
	host := strings.TrimPrefix(srv.URL, "http://")
	must(t, imagegen.Push(host+"/llama:b1", img))
	d, _ := img.Digest()
	app := filepath.Join(t.TempDir(), "app")
	mustInstall(t, opts(app, "docker://"+host+"/llama:b1"))
	mustInstall(t, opts(app, "docker://"+host+"/llama@"+d.String()))
	srv.Close()
	if r := mustInstall(t, opts(app, "docker://"+host+"/llama@"+d.String())); !r.UpToDate {
		t.Error("digest reference with the registry gone: not already installed")
	}
	o := opts(app, "docker://"+host+"/llama@"+d.String())
	o.Force = true
	if r := mustInstall(t, o); r.UpToDate || readServer(t, app) != "srv" {
		t.Error("--force of a digest with the registry gone did not reinstall from the blob cache")
	}
	o = opts(app, "docker://"+host+"/llama:b1")
	o.Refresh = true
	if _, err := Install(context.Background(), o); err == nil || !strings.Contains(err.Error(), "cannot be reached") {
		t.Errorf("--refresh with the registry gone: %v, want it to say the registry cannot be reached", err)
	}
}

// registryWith wraps the in-process registry: auth asks for basic
// credentials user:secret (forbid answers 403 to any other); tamper
// changes the bytes of blob responses.
func registryWith(auth, tamper bool, forbid ...bool) *httptest.Server {
	inner := imagegen.Registry()
	h := inner.Config.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if auth {
			if u, p, ok := r.BasicAuth(); !ok || u != "user" || p != "secret" {
				if len(forbid) > 0 && forbid[0] && ok {
					w.WriteHeader(http.StatusForbidden)
					return
				}
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
		}
		if tamper && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			b := rec.Body.Bytes()
			if len(b) > 100 {
				b[len(b)/2] ^= 0xff
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(b)
			return
		}
		h.ServeHTTP(w, r)
	}))
	return srv
}

func TestImageRegistryRefusals(t *testing.T) {
	img := cudaLike(t, archive.Gzip, "srv", nil)
	good := imagegen.Registry()
	defer good.Close()
	for _, c := range []struct {
		name         string
		auth, tamper bool
		creds        string
		want         []string
		forbid       bool
	}{
		{"403-wrong", true, false, "user:wrong", []string{"HTTP 403", "credentials in AUTO_INFER_REGISTRY_AUTH were refused"}, true},
		{"401-anonymous", true, false, "", []string{"HTTP 401", "AUTO_INFER_REGISTRY_AUTH=USER:TOKEN", "docker login"}, false},
		{"401-wrong", true, false, "user:wrong", []string{"HTTP 401", "credentials in AUTO_INFER_REGISTRY_AUTH were refused"}, false},
		{"digest-mismatch", false, true, "", []string{"digest mismatch", "nothing was installed"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := registryWith(c.auth, c.tamper, c.forbid)
			defer srv.Close()
			host := strings.TrimPrefix(srv.URL, "http://")
			o := opts(filepath.Join(t.TempDir(), "app"), "docker://"+host+"/llama:b1")
			// Push through the wrapper with the right credentials.
			t.Setenv("DOCKER_CONFIG", t.TempDir())
			must(t, os.WriteFile(filepath.Join(os.Getenv("DOCKER_CONFIG"), "config.json"), []byte(`{}`), 0o644))
			pushed := imagegen.PushAuth(host+"/llama:b1", img, "user", "secret")
			must(t, pushed)
			// An older bundle stays active through the refusal.
			old := writeArchive(t, t.TempDir(), "old.tar.gz", archive.Gzip, bundlegen.Release("b1", []byte("old")))
			mustInstall(t, opts(o.AppDir, old))
			o.RegistryAuth = c.creds
			_, err := Install(context.Background(), o)
			var bad interface{ BadInput() bool }
			if err == nil || !errors.As(err, &bad) || !bad.BadInput() {
				t.Fatalf("want bad input, got %v", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if readServer(t, o.AppDir) != "old" {
				t.Error("the active bundle changed")
			}
			if c.auth {
				o.RegistryAuth = "user:secret"
				mustInstall(t, o)
				if readServer(t, o.AppDir) != "srv" {
					t.Error("install with the right credentials did not activate the image")
				}
				// The same credentials from the Docker config.json, as
				// `docker login` leaves them.
				cfg := fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, host, base64.StdEncoding.EncodeToString([]byte("user:secret")))
				must(t, os.WriteFile(filepath.Join(os.Getenv("DOCKER_CONFIG"), "config.json"), []byte(cfg), 0o644))
				o2 := opts(filepath.Join(t.TempDir(), "app"), o.Source)
				mustInstall(t, o2)
				if readServer(t, o2.AppDir) != "srv" {
					t.Error("install with the Docker config's credentials did not activate the image")
				}
			}
		})
	}
}

// TestDockerArchiveOfSeveralImages: an archive of two images needs the
// one to take named; a wrong name lists the tags it holds.
func TestDockerArchiveOfSeveralImages(t *testing.T) {
	dir := t.TempDir()
	saved := filepath.Join(dir, "two.tar")
	must(t, imagegen.WriteDockerArchiveOf(saved, map[string]v1.Image{
		"llama:cpu": cudaLike(t, archive.Gzip, "cpu", nil), "llama:cuda": cudaLike(t, archive.Gzip, "cuda", nil)}))
	for src, want := range map[string]string{
		"docker-archive:" + saved:                 "holds 2 images; name one",
		"docker-archive:" + saved + ":llama:vulk": `holds no image tagged "llama:vulk"; it holds: llama:cpu, llama:cuda`,
	} {
		_, err := Install(context.Background(), opts(filepath.Join(t.TempDir(), "app"), src))
		var bad interface{ BadInput() bool }
		if err == nil || !errors.As(err, &bad) || !bad.BadInput() || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want bad input saying %q", src, err, want)
		}
	}
	app := filepath.Join(t.TempDir(), "app")
	mustInstall(t, opts(app, "docker-archive:"+saved+":llama:cuda"))
	if readServer(t, app) != "cuda" {
		t.Errorf("installed %q, want the llama:cuda image's", readServer(t, app))
	}
}

// TestImageLocalDigestMismatch: a layout blob changed after it was written
// is refused, and nothing is activated.
func TestImageLocalDigestMismatch(t *testing.T) {
	img := cudaLike(t, archive.Gzip, "srv", nil)
	srcs := sources(t, img)
	layers, _ := img.Layers()
	d, _ := layers[2].Digest()
	dir := strings.TrimPrefix(srcs["oci"], "oci:")
	blob := filepath.Join(dir, "blobs", "sha256", d.Hex)
	b, err := os.ReadFile(blob)
	must(t, err)
	b[len(b)/2] ^= 0xff
	must(t, os.WriteFile(blob, b, 0o644))
	app := filepath.Join(t.TempDir(), "app")
	_, err = Install(context.Background(), opts(app, srcs["oci"]))
	if err == nil || !strings.Contains(err.Error(), "digest mismatch") || !strings.Contains(err.Error(), d.Hex[:12]) {
		t.Fatalf("tampered layout blob: %v", err)
	}
	if _, err := os.Lstat(InstallDir(app)); err == nil {
		t.Error("a bundle was activated from a tampered image")
	}
	assertNoLeftovers(t, app)
}

// TestHostileLayersAreRefused runs the tarball corpus as image layers: the
// same rules refuse the same entries.
func TestHostileLayersAreRefused(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	mustInstall(t, opts(app, writeArchive(t, dir, "good.tar.gz", archive.Gzip, bundlegen.Release("b1", []byte("good")))))
	ran := 0
	for _, h := range hostileCorpus() {
		if h.format == archive.Zip || h.format == archive.Xz || h.format == archive.Unknown && h.build != nil {
			continue // no image holds zip or xz layers
		}
		absolute := false
		var es []bundlegen.Entry
		if h.build != nil {
			for _, e := range h.build() {
				absolute = absolute || strings.HasPrefix(e.Name, "/")
			}
			es = under("app", h.build())
		}
		if absolute {
			continue // a layer names paths from the image's root: "/tmp/x" is /app/tmp/x, checked by the property test
		}
		t.Run(h.name, func(t *testing.T) {
			ran++
			l, err := imagegen.NewLayer(max(h.format, archive.Tar), es)
			must(t, err)
			if h.mangle != nil {
				l.Raw = h.mangle(l.Raw)
			}
			img, err := imagegen.Image(here, nil, l)
			must(t, err)
			layout := filepath.Join(t.TempDir(), "layout")
			must(t, imagegen.WriteLayout(layout, img, ""))
			o := opts(app, "oci:"+layout)
			o.Limits = h.limits
			_, err = Install(context.Background(), o)
			var bad interface{ BadInput() bool }
			if err == nil || !errors.As(err, &bad) || !bad.BadInput() {
				t.Fatalf("want a bad-input refusal, got %v", err)
			}
			if want := strings.TrimPrefix(h.want, `"`); !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
			if readServer(t, app) != "good" {
				t.Error("installed bundle changed")
			}
			assertNoLeftovers(t, app)
		})
	}
	if ran < 15 {
		t.Errorf("only %d corpus archives ran as layers", ran)
	}
	for _, p := range []string{filepath.Join(dir, "pwned"), filepath.Join(app, "pwned")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s was written outside the staging dir", p)
		}
	}
}

// TestImageLinkLayersProperty runs the link property test's generated
// archives as image layers, split at random over two layers.
func TestImageLinkLayersProperty(t *testing.T) {
	n := 300
	if testing.Short() {
		n = 60
	}
	succeeded := 0
	for i := range n {
		seed := []byte(fmt.Sprintf("%08d-image-layers-%d", i*7919, i))
		for j := range seed {
			seed[j] ^= byte(i * 31)
		}
		es := randomArchive(&byteSource{b: seed})
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			if checkLinkSource(t, es, func(dir string) string {
				cut := len(es) / 2
				lower := layerOf(t, archive.Tar, under("app", es[:cut])...)
				upper := layerOf(t, archive.Gzip, under("app", es[cut:])...)
				img, err := imagegen.Image(here, nil, lower, upper)
				must(t, err)
				layout := filepath.Join(dir, "layout")
				must(t, imagegen.WriteLayout(layout, img, ""))
				return "oci:" + layout
			}) {
				succeeded++
			}
		})
	}
	if succeeded < n/40 {
		t.Errorf("only %d of %d generated images installed; the generator no longer reaches the steps after extraction", succeeded, n)
	}
}

// TestImageBlobCacheKeepsOneImage: installing another image removes the
// blobs only the first was made of; the second's stay for a reinstall.
func TestImageBlobCacheKeepsOneImage(t *testing.T) {
	a := cudaLike(t, archive.Gzip, "a", nil)
	b := cudaLike(t, archive.Zstd, "b", nil)
	srv := imagegen.Registry()
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	must(t, imagegen.Push(host+"/llama:a", a))
	must(t, imagegen.Push(host+"/llama:b", b))
	app := filepath.Join(t.TempDir(), "app")
	blobs := func(img v1.Image) (n int) {
		ls, _ := img.Layers()
		for _, l := range ls {
			d, _ := l.Digest()
			if _, err := os.Stat(filepath.Join(app, "cache", "blobs", "sha256", d.Hex)); err == nil {
				n++
			}
		}
		return n
	}
	mustInstall(t, opts(app, "docker://"+host+"/llama:a"))
	if blobs(a) != 3 {
		t.Fatalf("%d of a's 3 layers cached", blobs(a))
	}
	mustInstall(t, opts(app, "docker://"+host+"/llama:b"))
	if blobs(a) != 0 || blobs(b) != 3 {
		t.Errorf("after installing b: %d of a's layers and %d of b's cached, want 0 and 3", blobs(a), blobs(b))
	}
}

// TestImageBlobDownloadResumes: a layer download cut mid-way is kept and
// the next install asks only for the rest (Range), as from a registry whose
// blobs carry an ETag.
func TestImageBlobDownloadResumes(t *testing.T) {
	big := bundlegen.Entry{Name: "app/libggml-cuda.so", Type: tar.TypeReg, Mode: 0o644, Size: 4 << 20}
	l := layerOf(t, archive.Gzip, bundlegen.File("app/llama-server", 0o755, "srv"), big)
	img, err := imagegen.Image(here, nil, l)
	must(t, err)
	ld, _ := l.Digest()
	inner := imagegen.Registry()
	defer inner.Close()
	var ranges []string
	cut := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+ld.String()) {
			inner.Config.Handler.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		r2 := r.Clone(r.Context())
		r2.Header.Del("Range")
		r2.Header.Del("If-Range")
		inner.Config.Handler.ServeHTTP(rec, r2)
		body := rec.Body.Bytes()
		w.Header().Set("ETag", `"`+ld.String()+`"`)
		if cut {
			cut = false
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			w.WriteHeader(http.StatusOK)
			w.Write(body[:len(body)/2])
			panic(http.ErrAbortHandler) // the connection drops mid-body
		}
		ranges = append(ranges, r.Header.Get("Range"))
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	must(t, imagegen.Push(strings.TrimPrefix(inner.URL, "http://")+"/llama:b1", img))
	src := "docker://" + host + "/llama:b1"
	app := filepath.Join(t.TempDir(), "app")
	o := opts(app, src)
	o.Download.Retries = 0
	if _, err := Install(context.Background(), o); err == nil {
		t.Fatal("install through a cut connection succeeded")
	}
	part := filepath.Join(app, "cache", "blobs", "sha256", ld.Hex+".part")
	if fi, err := os.Stat(part); err != nil || fi.Size() == 0 {
		t.Fatalf("the cut download left no part file: %v", err)
	}
	mustInstall(t, o)
	if len(ranges) != 1 || !strings.HasPrefix(ranges[0], "bytes=") || ranges[0] == "bytes=0-" {
		t.Errorf("the second install asked %q, want one Range request for the rest", ranges)
	}
	if readServer(t, app) != "srv" {
		t.Error("the resumed image is not installed")
	}
}

// TestImageRefreshReresolvesTag: a tag pushed anew is not looked at again
// until --refresh, which installs what it names now.
func TestImageRefreshReresolvesTag(t *testing.T) {
	srv := imagegen.Registry()
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	must(t, imagegen.Push(host+"/llama:server", cudaLike(t, archive.Gzip, "first", nil)))
	app := filepath.Join(t.TempDir(), "app")
	src := "docker://" + host + "/llama:server"
	mustInstall(t, opts(app, src))
	must(t, imagegen.Push(host+"/llama:server", cudaLike(t, archive.Gzip, "second", nil)))
	if r := mustInstall(t, opts(app, src)); !r.UpToDate || readServer(t, app) != "first" {
		t.Fatal("a tag was re-resolved without --refresh")
	}
	o := opts(app, src)
	o.Refresh = true
	if r := mustInstall(t, o); r.UpToDate || readServer(t, app) != "second" {
		t.Fatalf("--refresh did not install what the tag names now (server %q)", readServer(t, app))
	}
	if r := mustInstall(t, o); !r.UpToDate {
		t.Error("--refresh of an unchanged tag reinstalled")
	}
}

// TestDockerArchivePinIsTheImageID: a docker save has no manifest digest;
// its pin is the image ID (the config's digest), as `docker images` shows.
func TestDockerArchivePinIsTheImageID(t *testing.T) {
	img := cudaLike(t, archive.Zstd, "srv", nil)
	id, err := img.ConfigName()
	must(t, err)
	src := sources(t, img)["docker-archive"]
	o := opts(filepath.Join(t.TempDir(), "app"), src)
	o.SHA256 = id.Hex
	if r := mustInstall(t, o); r.Marker.ImageDigest != id.String() {
		t.Errorf("marker digest %s, want the image ID %s", r.Marker.ImageDigest, id)
	}
	o = opts(filepath.Join(t.TempDir(), "app"), src)
	o.SHA256 = strings.Repeat("0", 64)
	if _, err := Install(context.Background(), o); err == nil || !strings.Contains(err.Error(), "not the pinned sha256:0000") {
		t.Errorf("a wrong image ID pin: %v", err)
	}
}

// --verify of a bundle taken from an image applies the image's layers
// again and compares: an untouched bundle is kept; a byte changed (at a
// generated offset), a mode, a link, a file removed or added is named and
// the image's bundle installed in its place.
func TestImageVerifyFindsChanges(t *testing.T) {
	img := cudaLike(t, archive.Gzip, "server-b7001", map[string]string{"org.opencontainers.image.version": "b7001"})
	srcs := sources(t, img)
	flip := func(name string, seed uint64) func(bundle string) {
		return func(bundle string) {
			p := filepath.Join(bundle, name)
			b, err := os.ReadFile(p)
			must(t, err)
			i := rand.New(rand.NewPCG(seed, 7)).IntN(len(b))
			b[i] ^= 1 << (seed % 8)
			must(t, os.WriteFile(p, b, 0o755))
		}
	}
	damages := []struct {
		name, says string
		damage     func(bundle string)
	}{
		{"server byte", "bin/llama-server differs in content", flip("bin/llama-server", 1)},
		{"backend byte", "bin/libggml-cuda.so differs in content", func(bundle string) {
			p := filepath.Join(bundle, "bin/libggml-cuda.so")
			flip("bin/libggml-cuda.so", 2)(bundle)
			must(t, os.Chmod(p, 0o644))
		}},
		{"mode", "bin/sub/kept has mode 0600", func(bundle string) { must(t, os.Chmod(filepath.Join(bundle, "bin/sub/kept"), 0o600)) }},
		{"removed", "bin/libggml-cuda.so is missing", func(bundle string) { must(t, os.Remove(filepath.Join(bundle, "bin/libggml-cuda.so"))) }},
		{"added", "bin/sub/extra is not in the source", func(bundle string) {
			must(t, os.WriteFile(filepath.Join(bundle, "bin/sub/extra"), []byte("x"), 0o644))
		}},
		{"link", `bin/libllama.so links to "llama-server"`, func(bundle string) {
			p := filepath.Join(bundle, "bin/libllama.so")
			must(t, os.Remove(p))
			must(t, os.Symlink("llama-server", p))
		}},
	}
	for _, kind := range []string{"docker", "oci-archive", "docker-archive"} {
		for _, d := range damages {
			if kind != "docker" && d.name != "server byte" {
				continue
			}
			t.Run(kind+"/"+d.name, func(t *testing.T) {
				app := filepath.Join(t.TempDir(), "app")
				first := mustInstall(t, opts(app, srcs[kind]))
				verify := func() (Result, string) {
					var out bytes.Buffer
					o := opts(app, srcs[kind])
					o.Verify = true
					o.Printer = printer.New(&out, &out, "", false)
					return mustInstall(t, o), out.String()
				}
				if r, out := verify(); !r.UpToDate || !strings.Contains(out, "verified: ") || r.Marker.VersionDir != first.Marker.VersionDir {
					t.Fatalf("--verify of an untouched bundle: up to date %v, version %s\n%s", r.UpToDate, r.Marker.VersionDir, out)
				}
				d.damage(InstallDir(app))
				r, out := verify()
				if r.UpToDate || !strings.Contains(out, d.says) || r.Marker.VersionDir == first.Marker.VersionDir {
					t.Fatalf("--verify after %s: up to date %v, version %s; want it to say %q and reinstall\n%s", d.name, r.UpToDate, r.Marker.VersionDir, d.says, out)
				}
				if readServer(t, app) != "server-b7001" {
					t.Errorf("llama-server = %q after the repair", readServer(t, app))
				}
				if r, out := verify(); !r.UpToDate {
					t.Errorf("--verify after the repair found a difference:\n%s", out)
				}
			})
		}
	}
}
