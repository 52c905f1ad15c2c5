package install

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/image"
	"github.com/llamaboot/llamaboot/internal/printer"
)

// blobsDir holds registry blobs by digest: <app>/cache/blobs/sha256/<hex>.
func blobsDir(app string) string { return filepath.Join(cacheDir(app), "blobs") }

// runImage installs the llama.cpp directory of a container image. A boot
// whose marker names the same reference (and, for a tag, without
// --refresh) does not resolve anything: the bundle is there.
func (j *job) runImage(ctx context.Context) (Result, error) {
	p := j.Printer
	ref, err := image.Parse(j.Source)
	if err != nil {
		return Result{}, err
	}
	dir := j.imagePath()
	if r, ok := j.imageUpToDate(ref, dir); ok {
		p.Stepf("already installed: %s (%s) from %s; nothing to do%s", r.Marker.VersionDir, r.Marker.ImageDigest, ref, offlineNote(ref))
		return r, nil
	}
	release, err := j.lock(ctx)
	if err != nil {
		return Result{}, err
	}
	defer release()
	if r, ok := j.imageUpToDate(ref, dir); ok {
		p.Stepf("already installed by another process: %s; nothing to do", r.Marker.VersionDir)
		return r, nil
	}
	old, _ := ReadMarker(InstallDir(j.AppDir))
	o := image.Options{Auth: j.RegistryAuth, CacheDir: blobsDir(j.AppDir), Refresh: j.Refresh, Download: j.Download, Printer: p, Transport: j.ImageTransport}
	if old.ImageRef == ref.String() {
		o.Known = old.ImageDigest
	}
	p.Stepf("resolving %s", ref)
	im, err := image.Open(ctx, ref, o)
	if err != nil {
		return Result{}, err
	}
	defer im.Close()
	if j.SHA256 != "" && j.SHA256 != im.Digest.Hex && j.SHA256 != im.Manifest.Hex {
		return Result{}, &InputError{Msg: fmt.Sprintf("%s resolves to %s, not the pinned sha256:%s; nothing was installed (fix AUTO_INFER_LLAMA_CPP_PKG_SHA256 / --sha256, or pin with @sha256:)", ref, im.Digest, j.SHA256)}
	}
	desc := fmt.Sprintf("%s (%s, %d layers%s)", im.Digest, im.Platform, im.Layers(), versionNote(im.Version()))
	if !j.Force && old.ImageRef == ref.String() && old.ImageDigest == im.Digest.String() && old.ImagePath == dir && serverPresent(j.AppDir) {
		if j.Verify {
			return j.verifyImage(ctx, ref, im, dir, old)
		}
		p.Stepf("%s still resolves to %s; nothing to do", ref, desc)
		return Result{Marker: old, UpToDate: true}, nil
	}
	p.Stepf("image %s", desc)
	return j.installImage(ctx, ref, im, dir)
}

// verifyImage is --verify of a bundle the image still resolves to: the
// layers are applied again into a staging dir, every blob checked against
// its digest as it streams, and the installed bundle is compared with the
// result file by file (content, mode, link targets; the marker and helper
// links aside). The same is kept; a difference is named and the fresh
// tree installed in its place, as a changed archive is under --verify.
func (j *job) verifyImage(ctx context.Context, ref image.Ref, im *image.Image, dir string, old Marker) (Result, error) {
	p := j.Printer
	p.Stepf("verifying %s against %s: applying its layers again", InstallDir(j.AppDir), ref)
	// The libraries --with-libs copied then are part of what to expect.
	s, err := j.stageImage(ctx, ref, im, dir, j.WithLibs || old.ImageLibs != "")
	defer s.cleanup()
	if err != nil {
		return Result{}, err
	}
	installed, err := os.OpenRoot(InstallDir(j.AppDir))
	if err != nil {
		return Result{}, err
	}
	defer installed.Close()
	n, diff, err := compareTrees(installed, s.bundle, reservedNames())
	if err != nil {
		return Result{}, fmt.Errorf("verify %s: %w", InstallDir(j.AppDir), err)
	}
	if diff == "" {
		p.Stepf("verified: %s matches %s (%s) file for file (%d entries)", InstallDir(j.AppDir), ref, im.Digest, n)
		return Result{Marker: old, UpToDate: true}, nil
	}
	p.Warnf("verify: %s: %s; installing the image's again", InstallDir(j.AppDir), diff)
	return j.finishImage(ref, im, s)
}

func offlineNote(ref image.Ref) string {
	if ref.Local() || ref.Pinned() {
		return ""
	}
	return " (tag not re-resolved; --refresh asks the registry)"
}

func versionNote(v string) string {
	if v == "" {
		return ""
	}
	return ", version " + v
}

func (j *job) imagePath() string {
	if j.ImagePath == "" {
		return image.DefaultPath
	}
	return path.Clean("/" + j.ImagePath)
}

func serverPresent(app string) bool {
	fi, err := os.Stat(filepath.Join(InstallDir(app), "bin", "llama-server"))
	return err == nil && fi.Mode().IsRegular()
}

// imageUpToDate reports whether the installed bundle came from this
// reference and directory and may be kept without looking at the image: a
// local image whose file is unchanged, a digest, or a tag (unless
// --refresh). --verify and --force always look.
func (j *job) imageUpToDate(ref image.Ref, dir string) (Result, bool) {
	if j.Force || j.Verify {
		return Result{}, false
	}
	m, err := ReadMarker(InstallDir(j.AppDir))
	if err != nil || m.ImageRef != ref.String() || m.ImagePath != dir || !serverPresent(j.AppDir) {
		return Result{}, false
	}
	if j.SHA256 != "" && "sha256:"+j.SHA256 != m.ImageDigest && "sha256:"+j.SHA256 != m.ImageManifest {
		return Result{}, false
	}
	switch {
	case ref.Local():
		if s, ok := statStamp(ref.StampFile()); !ok || s != m.SourceStamp {
			return Result{}, false
		}
	case ref.Pinned():
		// The digest names the content: nothing to re-resolve.
	case j.Refresh:
		return Result{}, false
	}
	return Result{Marker: m, UpToDate: true}, true
}

// installImage applies the image's layers into a staging dir and installs
// the result like any release-layout bundle.
func (j *job) installImage(ctx context.Context, ref image.Ref, im *image.Image, dir string) (Result, error) {
	s, err := j.stageImage(ctx, ref, im, dir, j.WithLibs)
	defer s.cleanup()
	if err != nil {
		return Result{}, err
	}
	return j.finishImage(ref, im, s)
}

// stageImage applies the image's layers into a fresh staging dir and lays
// the bundle out there. The staging is returned even with an error: the
// caller cleans it up.
func (j *job) stageImage(ctx context.Context, ref image.Ref, im *image.Image, dir string, withLibs bool) (*staging, error) {
	p := j.Printer
	src := source{label: ref.String(), name: imageName(ref), local: true, path: ref.String()}
	if ref.Local() {
		src.info, _ = os.Stat(ref.StampFile())
	}
	j.shareBudget()
	s := &staging{src: src, app: j.AppDir}
	s.old, _ = ReadMarker(InstallDir(j.AppDir))
	var err error
	if s.dir, err = os.MkdirTemp(filepath.Join(j.AppDir, versionsName), stagingPfx); err != nil {
		return s, fmt.Errorf("create staging dir: %w", err)
	}
	if s.root, err = os.OpenRoot(s.dir); err != nil {
		return s, err
	}
	if err := s.root.Chmod(".", 0o755); err != nil { // through the root, not the path
		return s, err
	}
	s.start = time.Now()
	x, err := im.Extract(ctx, s.root, s.dir, image.ExtractOptions{Path: dir, Limits: j.Limits, Jobs: j.ImageJobs, WithLibs: withLibs})
	if cerr := ctx.Err(); cerr != nil {
		return s, stopped(cerr)
	}
	if err != nil {
		return s, err
	}
	j.step("extracted")
	p.Stepf("took %s from the image: %d entries, %s in %.1fs", dir, x.Entries, printer.Bytes(x.Bytes), time.Since(s.start).Seconds())
	if withLibs {
		if len(x.Libs) == 0 {
			p.Stepf("--with-libs: every library the bundle needs is found in this container; none copied")
		}
		for _, l := range x.Libs {
			p.Stepf("--with-libs: copied %s from the image (%s)", l.Name, l.From)
		}
	}
	s.sum, s.format = im.Digest.Hex, archive.Unknown
	s.image = &imageInfo{
		ref: ref.String(), digest: im.Digest.String(), version: im.Version(), path: dir, platform: im.Platform,
		transport: ref.Transport, tag: im.Tag(),
	}
	for _, l := range x.Libs {
		s.image.libs = append(s.image.libs, l.Name+" <- "+l.From)
	}
	if im.Manifest.Hex != "" {
		s.image.manifest = im.Manifest.String()
	}
	if !ref.Local() {
		s.cachePath = filepath.Join(blobsDir(j.AppDir), im.Digest.Algorithm, im.Digest.Hex)
	}
	return s, j.stepLayout(s)
}

// finishImage records, moves into place and activates a staged image
// bundle.
func (j *job) finishImage(ref image.Ref, im *image.Image, s *staging) (Result, error) {
	if err := j.stepMarker(s); err != nil {
		return Result{}, err
	}
	r, err := j.stepActivate(s)
	if err == nil && !ref.Local() {
		pruneBlobs(j.AppDir, im.Blobs(), j.Printer)
	}
	return r, err
}

// pruneBlobs removes cached registry blobs (and partial downloads) that
// the image just activated is not made of: the cache keeps one image, the
// one a --force reinstall or a lost bundle needs.
func pruneBlobs(app string, keep []v1.Hash, p *printer.Printer) {
	dir := filepath.Join(blobsDir(app), "sha256")
	kept := map[string]bool{}
	for _, h := range keep {
		kept[h.Hex] = true
	}
	entries, _ := os.ReadDir(dir)
	var freed int64
	for _, e := range entries {
		hex, _, _ := strings.Cut(e.Name(), ".")
		if kept[hex] {
			continue
		}
		if fi, err := e.Info(); err == nil {
			freed += fi.Size()
		}
		_ = os.RemoveAll(filepath.Join(dir, e.Name()))
	}
	if freed > 0 {
		p.Stepf("removed cached blobs of other images (%s)", printer.Bytes(freed))
	}
}

// imageInfo is what the marker records of an image source.
type imageInfo struct {
	ref, digest, manifest, version, path, platform, transport, tag string
	libs                                                           []string
}

// imageName is the image's short name for the marker's archive_name.
func imageName(ref image.Ref) string {
	if ref.Local() {
		n := filepath.Base(ref.Path)
		if ref.Name != "" {
			n += ":" + ref.Name
		}
		return n
	}
	s := ref.Remote.Name()
	return s[strings.LastIndex(s, "/")+1:]
}
