package install

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/llamaboot/llamaboot/internal/access"
	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/dirs"
	"github.com/llamaboot/llamaboot/internal/printer"
)

// staging is one install's work in progress, filled in step by step. It
// owns its cleanup: the staging dir, the cache copy being written and the
// version dir until it is active are removed unless the install kept them.
type staging struct {
	src       source
	app       string
	cachePath string // where the archive lives once cached
	readFrom  string // the file unpacked: the source, or its copy in the cache
	copyTo    string // the cache copy being written, "" when reading from the cache
	old       Marker // of the bundle active before

	dir    string   // <versions>/.staging-*
	root   *os.Root // dir
	format archive.Format
	sum    string
	start  time.Time

	bundleDir string   // the bundle inside dir ("." or its top-level dir)
	bundle    *os.Root // bundleDir
	layout    string
	marker    Marker
	final     string // <versions>/<version> once moved there

	cached, active bool
	image          *imageInfo // the image the bundle came from, if it did
}

func (s *staging) cleanup() {
	if s.bundle != nil {
		s.bundle.Close()
	}
	if s.root != nil {
		s.root.Close()
	}
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
	if s.copyTo != "" && !s.cached {
		_ = os.Remove(s.copyTo)
	}
	if s.final != "" && !s.active {
		_ = os.RemoveAll(s.final)
	}
}

// stageSource decides what to read: the cache when it already holds this
// very source (a damaged install, --force, or a download); otherwise the
// source, copied into the cache while it is hashed and extracted, in one
// pass.
func (j *job) stageSource(src source) *staging {
	app := j.AppDir
	s := &staging{src: src, app: app, cachePath: filepath.Join(cacheDir(app), filepath.Base(src.path)), readFrom: src.path}
	s.old, _ = ReadMarker(InstallDir(app))
	old := s.old
	if cs, ok := statStamp(s.cachePath); ok && old.CachePath == s.cachePath && cs == old.CacheStamp &&
		old.SourcePath == src.label && stampOf(src.info) == old.SourceStamp {
		s.readFrom = s.cachePath
	} else if sameFile(src.path, s.cachePath) {
		s.readFrom = s.cachePath
	} else {
		s.copyTo = filepath.Join(cacheDir(app), ".part-"+filepath.Base(src.path))
	}
	return s
}

// stepUnpack detects the format, then hashes, caches and extracts the
// archive into a fresh staging dir.
func (j *job) stepUnpack(ctx context.Context, s *staging) error {
	p := j.Printer
	// The user's package or the cache copy: links on the way followed only
	// when root (or we) own them, as everything root reads by a path.
	in, err := dirs.OpenRegular(s.readFrom)
	if err != nil {
		return &InputError{Msg: fmt.Sprintf("package %s cannot be read", s.readFrom), Err: err}
	}
	defer in.Close()
	br := bufio.NewReaderSize(ctxReader{ctx, in}, 1<<20)
	head, _ := br.Peek(archive.PeekSize)
	s.format = archive.Detect(head)
	name := s.src.name
	if claimed := archive.FormatFromName(name); claimed != archive.Unknown && s.format != archive.Unknown && claimed != s.format {
		p.Stepf("note: %s is named like %s but its content is %s; reading it as %s", name, claimed, s.format, s.format)
	}
	switch s.format {
	case archive.Unknown:
		if ctx.Err() != nil {
			return stopped(context.Cause(ctx))
		}
		return &InputError{Msg: fmt.Sprintf("%s is not a supported archive (tar, tar.gz, tar.zst, tar.xz or zip); check the file is complete", s.src.shown())}
	case archive.Bzip2:
		return &InputError{Msg: fmt.Sprintf("%s is bzip2-compressed, which llamaboot does not read; repack it as .tar.gz, .tar.zst, .tar.xz or .zip", s.src.shown())}
	}

	s.dir, err = os.MkdirTemp(filepath.Join(s.app, versionsName), stagingPfx)
	if err != nil {
		return access.Explain(err, AppDirSetting)
	}
	if s.root, err = os.OpenRoot(s.dir); err != nil {
		return err
	}
	// The mode through the opened root, not the path: no swap of the name
	// between the two calls can redirect it.
	if err := s.root.Chmod(".", 0o755); err != nil {
		return err
	}
	verb := "extracting"
	if s.copyTo != "" {
		verb = "copying to cache and extracting"
	}
	p.Stepf("installing %s (%s, %s): %s", name, s.format, printer.Bytes(s.src.info.Size()), verb)
	s.start = time.Now()
	prog := p.Progress(verb, s.src.info.Size())
	sum, stats, err := unpack(ctx, br, s.readFrom, s.format, s.root, s.copyTo, j.Limits, prog)
	prog.Done()
	if ctx.Err() != nil {
		return stopped(context.Cause(ctx))
	}
	if err != nil {
		var ae *archive.Error
		if errors.As(err, &ae) {
			return fmt.Errorf("%s: %w", s.src.shown(), err)
		}
		return err
	}
	s.sum = sum
	p.Stepf("extracted %d entries, %s in %.1fs (sha256 %s)", stats.Entries, printer.Bytes(stats.Bytes), time.Since(s.start).Seconds(), sum)
	return nil
}

// stopped is an install cancelled by cause (a signal, named by the
// cancelling context's cause rather than as "context canceled").
func stopped(err error) error {
	return fmt.Errorf("install stopped: %w; the active bundle is unchanged", err)
}

// stepVerify checks the archive against the pin, and a cached copy against
// what the marker recorded for it.
func (j *job) stepVerify(s *staging) error {
	if j.SHA256 != "" && s.sum != j.SHA256 {
		return &InputError{Msg: fmt.Sprintf("checksum mismatch for %s: expected sha256 %s, got %s; nothing was installed (fix AUTO_INFER_LLAMA_CPP_PKG_SHA256 / --sha256 or the file)", s.src.shown(), j.SHA256, s.sum)}
	}
	if s.readFrom == s.cachePath && s.old.SHA256 != "" && s.sum != s.old.SHA256 && !sameFile(s.src.path, s.cachePath) {
		return fmt.Errorf("cached %s no longer matches its recorded sha256 (disk damage?); remove it and retry", s.cachePath)
	}
	return nil
}

// stepLayout finds the bundle in the staging tree and shapes it: a release
// layout moved into bin/, the whole tree audited for links out, reserved
// names checked, llama-server made executable, the helper links added.
// Every step goes through os.Root, so no link in the archive can lead one
// outside.
func (j *job) stepLayout(s *staging) error {
	var err error
	s.bundleDir, s.layout, err = bundleRoot(s.root)
	if err != nil {
		var ie *InputError
		if errors.As(err, &ie) {
			ie.Msg = s.src.shown() + ": " + ie.Msg
		}
		return err
	}
	if s.bundle, err = s.root.OpenRoot(s.bundleDir); err != nil {
		return err
	}
	// Extraction vouched for the staging tree; the bundle may be one level
	// down and its layout reshaped, so vouch again for what will be kept.
	// The marker and helper links are written after this: a link leading to
	// one of them would lead wherever they do (the llamaboot binary).
	if err := archive.Audit(s.bundle, j.Limits, reservedNames()...); err != nil {
		return fmt.Errorf("%s: %w", s.src.shown(), err)
	}
	if err := checkReserved(s.bundle); err != nil {
		return fmt.Errorf("%s: %w", s.src.shown(), err)
	}
	if err := s.bundle.Chmod(path.Join("bin", "llama-server"), 0o755); err != nil {
		return fmt.Errorf("%s: %w", s.src.shown(), &InputError{Msg: "bin/llama-server cannot be made executable (a link that leads nowhere once the release is moved into bin/?)", Err: err})
	}
	return EnsureEntryPoints(filepath.Join(s.dir, s.bundleDir), j.Self, j.EntryPoints)
}

// stepMarker records where the bundle came from, flushes it to disk and
// moves it into the versions dir under its final name.
func (j *job) stepMarker(s *staging) error {
	app := s.app
	// Renaming keeps inode and mtime, so the part file's stamp is the
	// cache file's stamp once it is moved into place.
	cacheStamp, _ := statStamp(s.cachePath)
	if s.copyTo != "" {
		cacheStamp, _ = statStamp(s.copyTo)
	}
	bundlePath := filepath.Join(s.dir, s.bundleDir)
	tag := buildTag(filepath.Base(bundlePath), s.src.name)
	if im := s.image; im != nil {
		tag = buildTag(im.version, im.tag, im.ref)
	}
	version := versionName(app, tag, s.sum)
	s.marker = Marker{
		ArchiveName: s.src.name, SHA256: s.sum, InstalledAtUnix: time.Now().Unix(),
		SourcePath: s.src.label, ETag: s.src.etag, LastModified: s.src.lastModified,
		Format: s.format.String(), Layout: s.layout, BuildTag: tag, VersionDir: version, CachePath: s.cachePath,
		CacheStamp: cacheStamp, Installer: j.Installer,
	}
	if s.src.info != nil {
		s.marker.Size, s.marker.SourceStamp = s.src.info.Size(), stampOf(s.src.info)
	}
	if im := s.image; im != nil {
		s.marker.Format = im.transport
		s.marker.ImageRef, s.marker.ImageDigest, s.marker.ImageManifest = im.ref, im.digest, im.manifest
		s.marker.ImageVersion, s.marker.ImagePath, s.marker.ImagePlatform = im.version, im.path, im.platform
		s.marker.ImageLibs = strings.Join(im.libs, ", ")
	}
	if err := writeMarker(s.bundle, s.marker); err != nil {
		return err
	}
	if err := syncFS(s.dir); err != nil {
		return err
	}
	j.step("synced")
	final := filepath.Join(app, versionsName, version)
	if err := os.Rename(bundlePath, final); err != nil {
		return fmt.Errorf("move bundle into %s: %w", final, err)
	}
	s.final = final
	if err := syncDir(filepath.Dir(final)); err != nil {
		return err
	}
	j.step("staged")
	return nil
}

// stepCommitCache moves the archive's copy into the cache, where the next
// boot finds it.
func (j *job) stepCommitCache(s *staging) error {
	if s.copyTo == "" {
		return nil
	}
	if err := os.Rename(s.copyTo, s.cachePath); err != nil {
		return fmt.Errorf("store %s in cache: %w", s.src.name, err)
	}
	s.cached = true
	if err := syncDir(cacheDir(s.app)); err != nil {
		return err
	}
	j.step("cached")
	return nil
}

// stepActivate switches the install path to the new version and prunes
// versions other than it and the previous one.
func (j *job) stepActivate(s *staging) (Result, error) {
	p, app, version := j.Printer, s.app, s.marker.VersionDir
	previous, err := activate(app, version)
	if t, _ := os.Readlink(InstallDir(app)); filepath.Base(t) == version {
		s.active = true // the switch happened, even if a later sync failed
	}
	if err != nil {
		return Result{}, err
	}
	j.step("activated")
	if err := recordActive(app, version); err != nil {
		return Result{}, err
	}
	j.pruneKept()
	p.Stepf("activated %s (%s layout%s) at %s in %.1fs", version, s.layout, tagNote(s.marker.BuildTag), InstallDir(app), time.Since(s.start).Seconds())
	j.sayKept(previous, version)
	return Result{Marker: s.marker, Previous: previous}, nil
}

// ctxReader and ctxReaderAt end a copy or an extraction at the next read
// once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

type ctxReaderAt struct {
	ctx context.Context
	r   io.ReaderAt
}

func (c ctxReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.ReadAt(p, off)
}
