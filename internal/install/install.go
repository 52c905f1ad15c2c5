// Package install puts a llama.cpp bundle into an app dir: source → cache →
// staging → activation, under a lock, atomically, and not at all when the
// same bundle is already there.
package install

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/fetch"
	"github.com/llamaboot/llamaboot/internal/printer"
)

// Options says what to install where.
type Options struct {
	AppDir      string
	Source      string // local archive path
	SHA256      string // optional pin, hex
	Force       bool   // reinstall even if up to date
	Verify      bool   // re-hash the source instead of trusting its stamp
	Limits      archive.Limits
	LockTimeout time.Duration
	// EntryPoints are names to link to Self inside every installed bundle
	// (check-and-run-llama-cpp.sh and friends).
	EntryPoints []string
	Self        string
	Installer   string // llamaboot version, recorded in the marker
	Printer     *printer.Printer

	// For http(s) sources: download settings (URL, CacheDir and Printer
	// are filled in), a SHA256SUMS-style file to take the pin from, and
	// --refresh (ask the server whether the bundle changed).
	Download   fetch.Options
	SHA256From string
	Refresh    bool

	// origin is what the marker records as the source when the file read
	// is a download in the cache; validators come with it.
	origin             string
	etag, lastModified string

	// afterStep, when set, is called between steps; tests use it to stop an
	// install at chosen points.
	afterStep func(step string)
}

// Result tells what Install did.
type Result struct {
	Marker   Marker
	UpToDate bool   // nothing was copied, hashed or extracted
	Previous string // version kept for rollback
}

// InputError is a problem with what the user gave: a missing source, a
// checksum mismatch, a bundle without llama-server. Exit status 2.
type InputError struct {
	Msg string
	Err error
}

func (e *InputError) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}
func (e *InputError) Unwrap() error { return e.Err }

// BadInput marks the error as the user's input at fault.
func (e *InputError) BadInput() bool { return true }

// Paths of an app dir.
func InstallDir(app string) string { return filepath.Join(app, installName) }
func cacheDir(app string) string   { return filepath.Join(app, "cache") }

// Install installs opts.Source into opts.AppDir.
func Install(opts Options) (Result, error) {
	p := opts.Printer
	opts.SHA256 = strings.ToLower(strings.TrimSpace(opts.SHA256))
	if opts.SHA256 != "" {
		if b, err := hex.DecodeString(opts.SHA256); err != nil || len(b) != sha256.Size {
			return Result{}, &InputError{Msg: fmt.Sprintf("--sha256 %q is not a SHA-256 hex digest (64 hex characters)", opts.SHA256)}
		}
	}
	if fetch.IsURL(opts.Source) {
		return installURL(opts)
	}
	src, err := filepath.Abs(opts.Source)
	if err != nil {
		return Result{}, err
	}
	opts.Source = src
	srcInfo, err := os.Stat(src)
	if err != nil {
		return Result{}, &InputError{Msg: fmt.Sprintf("package %s cannot be read; set AUTO_INFER_LLAMA_CPP_PKG_PATH (or SOURCE) to an existing archive", src), Err: err}
	}
	if !srcInfo.Mode().IsRegular() {
		return Result{}, &InputError{Msg: fmt.Sprintf("package %s is not a regular file", src)}
	}

	// The common case, a second boot, decides from stamps alone: no lock
	// needed, since a complete bundle is only ever switched in whole.
	if r, ok := upToDate(opts, srcInfo); ok {
		p.Stepf("already installed: %s (sha256 %s…) from %s; nothing to do", r.Marker.ArchiveName, r.Marker.SHA256[:12], src)
		return r, nil
	}

	release, err := lockApp(opts)
	if err != nil {
		return Result{}, err
	}
	defer release()
	// Another container may have finished the same work while we waited.
	if r, ok := upToDate(opts, srcInfo); ok {
		p.Stepf("already installed by another process: %s; nothing to do", r.Marker.ArchiveName)
		return r, nil
	}
	return installLocked(opts, srcInfo)
}

// lockApp takes the app dir's install lock and repairs what a killed run
// left behind. Call the returned func to release the lock.
func lockApp(opts Options) (release func(), err error) {
	if err := os.MkdirAll(opts.AppDir, 0o755); err != nil {
		return nil, fmt.Errorf("create app dir %s: %w", opts.AppDir, err)
	}
	wait := opts.LockTimeout
	if wait == 0 {
		wait = 10 * time.Minute
	}
	release, err = lockFile(filepath.Join(opts.AppDir, ".llamaboot-install.lock"), wait, opts.Printer)
	if err != nil {
		return nil, err
	}
	cleanStale(opts.AppDir)
	if v, ok := recoverLink(opts.AppDir); ok {
		opts.Printer.Warnf("%s was missing (an earlier install was interrupted); restored version %s", InstallDir(opts.AppDir), v)
	}
	return release, nil
}

// upToDate reports whether the installed bundle came from this very source
// file, judged by size, mtime and inode of source and cache (or, with
// Verify, by hashing). srcInfo is nil for a downloaded source, which is
// judged by the cached file alone.
func upToDate(opts Options, srcInfo fs.FileInfo) (Result, bool) {
	if opts.Force {
		return Result{}, false
	}
	dir := InstallDir(opts.AppDir)
	m, err := ReadMarker(dir)
	if err != nil || m.SHA256 == "" || m.SourcePath != sourceLabel(opts) {
		return Result{}, false
	}
	if opts.SHA256 != "" && opts.SHA256 != m.SHA256 {
		return Result{}, false
	}
	if fi, err := os.Stat(filepath.Join(dir, "bin", "llama-server")); err != nil || !fi.Mode().IsRegular() {
		return Result{}, false
	}
	cache, ok := statStamp(m.CachePath)
	if !ok || cache != m.CacheStamp {
		return Result{}, false
	}
	if opts.Verify {
		file := opts.Source
		if srcInfo == nil {
			file = m.CachePath
		}
		sum, err := hashFile(file)
		if err != nil || sum != m.SHA256 {
			return Result{}, false
		}
		opts.Printer.Stepf("verified: %s hashes to the installed sha256", file)
		return Result{Marker: m, UpToDate: true}, true
	}
	if srcInfo != nil && stampOf(srcInfo) != m.SourceStamp {
		return Result{}, false
	}
	return Result{Marker: m, UpToDate: true}, true
}

// sourceLabel is how the marker names the source: the absolute path, or
// the URL without secrets.
func sourceLabel(o Options) string {
	switch {
	case o.origin != "":
		return o.origin
	case fetch.IsURL(o.Source):
		return fetch.Redact(o.Source)
	}
	return o.Source
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func (o Options) step(name string) {
	if o.afterStep != nil {
		o.afterStep(name)
	}
}

func installLocked(opts Options, srcInfo fs.FileInfo) (res Result, err error) {
	p := opts.Printer
	app := opts.AppDir
	name := filepath.Base(opts.Source)
	for _, d := range []string{cacheDir(app), filepath.Join(app, versionsName)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return res, fmt.Errorf("create %s: %w", d, err)
		}
	}
	cachePath := filepath.Join(cacheDir(app), name)

	// Read from the cache when it already holds this very source (a damaged
	// install or --force); otherwise copy the source into the cache while
	// hashing and extracting it, in one pass.
	old, _ := ReadMarker(InstallDir(app))
	readFrom, copyTo := opts.Source, ""
	if cs, ok := statStamp(cachePath); ok && old.CachePath == cachePath && cs == old.CacheStamp &&
		old.SourcePath == sourceLabel(opts) && stampOf(srcInfo) == old.SourceStamp {
		readFrom = cachePath
	} else if sameFile(opts.Source, cachePath) {
		readFrom = cachePath
	} else {
		copyTo = filepath.Join(cacheDir(app), ".part-"+name)
	}

	in, err := os.Open(readFrom)
	if err != nil {
		return res, &InputError{Msg: fmt.Sprintf("package %s cannot be read", readFrom), Err: err}
	}
	defer in.Close()
	br := bufio.NewReaderSize(in, 1<<20)
	head, _ := br.Peek(archive.PeekSize)
	format := archive.Detect(head)
	if claimed := archive.FormatFromName(name); claimed != archive.Unknown && format != archive.Unknown && claimed != format {
		p.Stepf("note: %s is named like %s but its content is %s; reading it as %s", name, claimed, format, format)
	}
	switch format {
	case archive.Unknown:
		return res, &InputError{Msg: fmt.Sprintf("%s is not a supported archive (tar, tar.gz, tar.zst, tar.xz or zip); check the file is complete", opts.Source)}
	case archive.Bzip2:
		return res, &InputError{Msg: fmt.Sprintf("%s is bzip2-compressed, which llamaboot does not read; repack it as .tar.gz, .tar.zst, .tar.xz or .zip", opts.Source)}
	}

	staging, err := os.MkdirTemp(filepath.Join(app, versionsName), stagingPfx)
	if err != nil {
		return res, fmt.Errorf("create staging dir: %w", err)
	}
	committed := false
	defer func() {
		_ = os.RemoveAll(staging)
		if copyTo != "" && !committed {
			_ = os.Remove(copyTo)
		}
	}()
	if err := os.Chmod(staging, 0o755); err != nil {
		return res, err
	}
	root, err := os.OpenRoot(staging)
	if err != nil {
		return res, err
	}
	defer root.Close()

	verb := "extracting"
	if copyTo != "" {
		verb = "copying to cache and extracting"
	}
	p.Stepf("installing %s (%s, %s): %s", name, format, printer.Bytes(srcInfo.Size()), verb)
	start := time.Now()
	prog := p.Progress(verb, srcInfo.Size())
	sum, stats, err := unpack(br, readFrom, format, root, copyTo, opts.Limits, prog)
	prog.Done()
	if err != nil {
		var ae *archive.Error
		if errors.As(err, &ae) {
			return res, fmt.Errorf("%s: %w", opts.Source, err)
		}
		return res, err
	}
	opts.step("extracted")
	if opts.SHA256 != "" && sum != opts.SHA256 {
		return res, &InputError{Msg: fmt.Sprintf("checksum mismatch for %s: expected sha256 %s, got %s; nothing was installed (fix AUTO_INFER_LLAMA_CPP_PKG_SHA256 / --sha256 or the file)", opts.Source, opts.SHA256, sum)}
	}
	if readFrom == cachePath && old.SHA256 != "" && sum != old.SHA256 && !sameFile(opts.Source, cachePath) {
		return res, fmt.Errorf("cached %s no longer matches its recorded sha256 (disk damage?); remove it and retry", cachePath)
	}
	p.Stepf("extracted %d entries, %s in %.1fs (sha256 %s)", stats.Entries, printer.Bytes(stats.Bytes), time.Since(start).Seconds(), sum)

	bundleDir, layout, err := bundleRoot(root)
	if err != nil {
		var ie *InputError
		if errors.As(err, &ie) {
			ie.Msg = opts.Source + ": " + ie.Msg
		}
		return res, err
	}
	bundle := filepath.Join(staging, bundleDir)
	broot, err := root.OpenRoot(bundleDir)
	if err != nil {
		return res, err
	}
	defer broot.Close()
	// Extraction vouched for the staging tree; the bundle may be one level
	// down and its layout reshaped, so vouch again for what will be kept.
	if err := archive.Audit(broot); err != nil {
		return res, fmt.Errorf("%s: %w", opts.Source, err)
	}
	if err := checkReserved(broot); err != nil {
		return res, fmt.Errorf("%s: %w", opts.Source, err)
	}
	if err := broot.Chmod(path.Join("bin", "llama-server"), 0o755); err != nil {
		return res, err
	}
	if err := EnsureEntryPoints(bundle, opts.Self, opts.EntryPoints); err != nil {
		return res, err
	}

	// Renaming keeps inode and mtime, so the part file's stamp is the
	// cache file's stamp once it is moved into place.
	cacheStamp, _ := statStamp(cachePath)
	if copyTo != "" {
		cacheStamp, _ = statStamp(copyTo)
	}
	tag := buildTag(filepath.Base(bundle), name)
	version := versionName(app, tag, sum)
	m := Marker{
		ArchiveName: name, SHA256: sum, InstalledAtUnix: time.Now().Unix(),
		SourcePath: sourceLabel(opts), Size: srcInfo.Size(), ETag: opts.etag, LastModified: opts.lastModified, Format: format.String(), Layout: layout,
		BuildTag: tag, VersionDir: version, CachePath: cachePath,
		SourceStamp: stampOf(srcInfo), CacheStamp: cacheStamp, Installer: opts.Installer,
	}
	if err := writeMarker(broot, m); err != nil {
		return res, err
	}
	if err := syncFS(staging); err != nil {
		return res, err
	}
	opts.step("synced")
	final := filepath.Join(app, versionsName, version)
	if err := os.Rename(bundle, final); err != nil {
		return res, fmt.Errorf("move bundle into %s: %w", final, err)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return res, err
	}
	opts.step("staged")
	if copyTo != "" {
		if err := os.Rename(copyTo, cachePath); err != nil {
			return res, fmt.Errorf("store %s in cache: %w", name, err)
		}
		committed = true
		if err := syncDir(cacheDir(app)); err != nil {
			return res, err
		}
		opts.step("cached")
	}
	previous, err := activate(app, version)
	if err != nil {
		// Remove the new version only if the switch did not happen.
		if t, _ := os.Readlink(InstallDir(app)); filepath.Base(t) != version {
			_ = os.RemoveAll(final)
		}
		return res, err
	}
	opts.step("activated")
	for _, v := range prune(app, version, previous) {
		p.Stepf("removed old bundle %s", v)
	}
	p.Stepf("activated %s (%s layout%s) at %s in %.1fs", version, layout, tagNote(tag), InstallDir(app), time.Since(start).Seconds())
	if previous != "" && previous != version {
		p.Stepf("previous bundle kept for rollback: %s", filepath.Join(app, versionsName, previous))
	}
	return Result{Marker: m, Previous: previous}, nil
}

func tagNote(tag string) string {
	if tag == "" {
		return ""
	}
	return ", build " + tag
}

func versionName(app, tag, sum string) string {
	if tag == "" {
		tag = "bundle"
	}
	base := fmt.Sprintf("%s-%s", tag, sum[:12])
	name := base
	for i := 2; ; i++ {
		if _, err := os.Lstat(filepath.Join(app, versionsName, name)); errors.Is(err, fs.ErrNotExist) {
			return name
		}
		name = fmt.Sprintf("%s.%d", base, i)
	}
}

func sameFile(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

// unpack hashes the archive stream, copies it to copyTo (if set) and
// extracts it into root. Reading, hashing and copying run in one goroutine
// and decompression plus extraction in another, so the two cores overlap.
func unpack(r io.Reader, srcPath string, format archive.Format, root *os.Root, copyTo string, lim archive.Limits, prog io.Writer) (sum string, stats archive.Stats, err error) {
	h := sha256.New()
	sinks := []io.Writer{h, prog}
	var cache *os.File
	if copyTo != "" {
		cache, err = os.OpenFile(copyTo, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return "", stats, fmt.Errorf("create cache file %s: %w", copyTo, err)
		}
		defer cache.Close()
		sinks = append(sinks, cache)
	}
	if format == archive.Zip {
		// Zip's directory sits at the end: hash and copy first, then extract
		// from a file with random access.
		if _, err := io.CopyBuffer(io.MultiWriter(sinks...), r, make([]byte, 1<<20)); err != nil {
			return "", stats, fmt.Errorf("read archive: %w", err)
		}
		zipPath := srcPath
		if cache != nil {
			zipPath = copyTo
		}
		zf, err := os.Open(zipPath)
		if err != nil {
			return "", stats, err
		}
		defer zf.Close()
		fi, err := zf.Stat()
		if err != nil {
			return "", stats, err
		}
		stats, err = archive.ExtractZip(zf, fi.Size(), root, lim)
		if err == nil && cache != nil {
			err = cache.Sync()
		}
		return hexSum(h), stats, err
	}

	pr, pw := io.Pipe()
	copied := make(chan error, 1)
	go func() {
		_, err := io.CopyBuffer(io.MultiWriter(append(sinks, pw)...), r, make([]byte, 1<<20))
		pw.CloseWithError(err)
		copied <- err
	}()
	stats, err = archive.Extract(pr, format, root, lim)
	if err == nil {
		// Hash and cache the whole file, trailing padding included.
		_, err = io.Copy(io.Discard, pr)
	}
	pr.CloseWithError(errAborted)
	cerr := <-copied
	if err == nil && cerr != nil {
		err = fmt.Errorf("read archive: %w", cerr)
	}
	if err == nil && cache != nil {
		err = cache.Sync()
	}
	return hexSum(h), stats, err
}

var errAborted = errors.New("extraction stopped")

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }
