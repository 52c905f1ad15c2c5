// Package install puts a llama.cpp bundle into an app dir: source → cache →
// staging → activation, under a lock, atomically, and not at all when the
// same bundle is already there.
package install

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/llamaboot/llamaboot/internal/access"
	"github.com/llamaboot/llamaboot/internal/appfile"
	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/dirs"
	"github.com/llamaboot/llamaboot/internal/fetch"
	"github.com/llamaboot/llamaboot/internal/image"
	"github.com/llamaboot/llamaboot/internal/printer"
)

// Options says what to install where. They are settings only: what one
// install learns on the way lives in its job and staging.
type Options struct {
	AppDir      string
	Source      string // local archive path or http(s) URL
	SHA256      string // optional pin, hex
	Force       bool   // reinstall even if up to date
	Verify      bool   // re-hash the source instead of trusting its stamp
	Limits      archive.Limits
	LockTimeout time.Duration
	// Keep is how many previous bundles stay for rollback: 0 means
	// DefaultKeep, a negative number none.
	Keep int
	// EntryPoints are names to link to Self inside every installed bundle
	// (check-and-run-llama-cpp.sh and friends).
	EntryPoints []string
	Self        string
	Installer   string // llamaboot version, recorded in the marker
	Printer     *printer.Printer

	// For http(s) sources: download settings (URL, Dest, SHA256 and
	// Printer are filled in), a SHA256SUMS-style file to take the pin from,
	// and --refresh (ask the server whether the bundle changed).
	Download   fetch.Options
	SHA256From string
	Refresh    bool

	// For container images (docker://, docker-archive:, oci:, oci-archive:):
	// the directory taken (default /app), registry credentials (USER:TOKEN,
	// from AUTO_INFER_REGISTRY_AUTH), blobs fetched at once, and the HTTP
	// transport (tests).
	ImagePath      string
	RegistryAuth   string
	WithLibs       bool // also copy the libraries this container lacks from the image's lower layers
	ImageJobs      int
	ImageTransport http.RoundTripper

	// Interrupt, when set, makes ctx end on Ctrl-C or SIGTERM
	// (signal.NotifyContext). It is called only once the install has work
	// to do: a second boot's "already installed" from stamps alone writes
	// nothing a signal could leave half done, and does not pay for it.
	Interrupt func(context.Context) (context.Context, context.CancelFunc)
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

// AppDirSetting names what moves the app dir, for permission errors.
const AppDirSetting = access.AppDir

// Paths of an app dir.
func InstallDir(app string) string { return filepath.Join(app, installName) }
func cacheDir(app string) string   { return filepath.Join(app, "cache") }

// Install installs opts.Source into opts.AppDir. Cancelling ctx stops it
// promptly (the download, the copy into the cache and the extraction all
// check it between reads) with the old bundle still active and a partial
// download kept for the next run to resume.
func Install(ctx context.Context, opts Options) (Result, error) {
	// Extraction and the audits check ctx in every loop: SIGTERM ends them.
	opts.Limits.Context = ctx
	r, err := (&job{Options: opts}).run(ctx)
	if err == nil && r.UpToDate {
		// Nothing was written, but root runs llama-server from here next:
		// an app dir (or a bundle dir) another user can change since the
		// install is theirs to swap for their own executable.
		if err := checkAppDir(ctx, opts.AppDir); err != nil {
			return Result{}, err
		}
	}
	return r, err
}

// checkAppDir refuses an app dir another user could change anything in
// that the install works in or root runs from: the app dir and its parents
// (dirs.CheckPath), then the cache, the versions and a legacy dir
// (dirs.CheckTree).
func checkAppDir(ctx context.Context, app string) error {
	if err := dirs.CheckPath(app); err != nil {
		return err
	}
	for _, name := range []string{"cache", versionsName, installName} {
		if err := dirs.CheckTree(app, name, ctx.Err); err != nil {
			return err
		}
	}
	// llamaboot points llama-cpp into the versions; a link someone made
	// elsewhere (root's, or CheckTree refused it) leads to what root runs
	// and whose marker says "installed": it must be as closed to others.
	link := InstallDir(app)
	if fi, err := os.Lstat(link); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		target, err := filepath.EvalSymlinks(link)
		if err != nil {
			return nil // dangling: the install repoints it
		}
		versions, verr := filepath.EvalSymlinks(filepath.Join(app, versionsName))
		if verr == nil && strings.HasPrefix(target, versions+string(filepath.Separator)) {
			return nil
		}
		if err := dirs.CheckPath(target); err != nil {
			return err
		}
		return dirs.CheckTree(filepath.Dir(target), filepath.Base(target), ctx.Err)
	}
	return nil
}

// interruptible makes ctx end on a signal (Options.Interrupt) from here
// on, the extraction's and audits' too.
func (j *job) interruptible(ctx context.Context) (context.Context, context.CancelFunc) {
	if j.Interrupt == nil {
		return ctx, func() {}
	}
	ctx, stop := j.Interrupt(ctx)
	j.Limits.Context = ctx
	return ctx, stop
}

// job is one install: its settings and a hook between steps, which tests
// use to stop an install at chosen points.
type job struct {
	Options
	afterStep func(step string)
}

func (j *job) step(name string) {
	if j.afterStep != nil {
		j.afterStep(name)
	}
}

// source is the archive an install reads, and how the marker names it.
type source struct {
	path  string      // the file read: the user's archive, or the download in the cache
	info  fs.FileInfo // of path
	label string      // the marker's source_path: the absolute path, or the redacted URL
	name  string      // the marker's archive_name
	// local: path is the user's own file, whose stamp the second boot
	// compares; a download is judged by the cached copy alone.
	local              bool
	etag, lastModified string // validators of a download, for --refresh
}

// shown names the source in messages.
func (s source) shown() string {
	if s.local {
		return s.path
	}
	return s.label + " (downloaded to " + s.path + ")"
}

func (j *job) run(ctx context.Context) (Result, error) {
	j.SHA256 = strings.ToLower(strings.TrimSpace(j.SHA256))
	if j.SHA256 != "" {
		if b, err := hex.DecodeString(j.SHA256); err != nil || len(b) != sha256.Size {
			return Result{}, &InputError{Msg: fmt.Sprintf("--sha256 %q is not a SHA-256 hex digest (64 hex characters)", j.SHA256)}
		}
	}
	if image.IsSource(j.Source) || fetch.IsURL(j.Source) {
		// A registry or server may be asked even when nothing changed.
		ctx, stop := j.interruptible(ctx)
		defer stop()
		if image.IsSource(j.Source) {
			return j.runImage(ctx)
		}
		return j.runURL(ctx)
	}
	if t, ok := image.UnknownTransport(j.Source); ok {
		return Result{}, &InputError{Msg: fmt.Sprintf("package %s: unknown transport %q; llamaboot installs from %s", Shown(j.Source), t, image.Accepted)}
	}
	src, err := j.localSource()
	if err != nil {
		return Result{}, err
	}
	// The common case, a second boot, decides from stamps alone: no lock
	// needed, since a complete bundle is only ever switched in whole.
	if r, ok := j.upToDate(src.label, src.info); ok {
		j.Printer.Stepf("already installed: %s (sha256 %s…) from %s; nothing to do", r.Marker.ArchiveName, r.Marker.SHA256[:12], src.path)
		return r, nil
	}
	ctx, stop := j.interruptible(ctx)
	defer stop()
	release, err := j.lock(ctx)
	if err != nil {
		return Result{}, err
	}
	defer release()
	// Another container may have finished the same work while we waited.
	if r, ok := j.upToDate(src.label, src.info); ok {
		j.Printer.Stepf("already installed by another process: %s; nothing to do", r.Marker.ArchiveName)
		return r, nil
	}
	if v, m, ok := j.keptMatch(src.label, src.info); ok {
		return j.reactivate(v, m, "reactivated kept bundle")
	}
	return j.installLocked(ctx, src)
}

// localSource is the source step for a file: it must be a readable
// regular file.
func (j *job) localSource() (source, error) {
	src, err := filepath.Abs(j.Source)
	if err != nil {
		return source{}, err
	}
	fi, err := os.Stat(src)
	if err != nil {
		return source{}, &InputError{Msg: fmt.Sprintf("package %s cannot be read; set AUTO_INFER_LLAMA_CPP_PKG_PATH (or SOURCE) to an existing archive", src), Err: err}
	}
	if fi.IsDir() {
		return source{}, &InputError{Msg: fmt.Sprintf("package %s is a directory, not a regular file (an archive); "+
			"if it is a Docker -v mount, the host file was missing when the container was created and Docker made an empty directory: check the host path", src)}
	}
	if !fi.Mode().IsRegular() {
		return source{}, &InputError{Msg: fmt.Sprintf("package %s is not a regular file (%s); point AUTO_INFER_LLAMA_CPP_PKG_PATH (or SOURCE) at the archive itself", src, fi.Mode().Type())}
	}
	return source{path: src, info: fi, label: src, name: filepath.Base(src), local: true}, nil
}

// lock takes the app dir's install lock and repairs what a killed run left
// behind. Call the returned func to release the lock.
func (j *job) lock(ctx context.Context) (release func(), err error) {
	// The install works in the app dir by path (staging, renames, the
	// llama-cpp link): no other user may be able to swap it meanwhile, nor
	// anything in it (CheckTree below).
	if err := dirs.CheckPath(j.AppDir); err != nil {
		return nil, err
	}
	for _, d := range []string{j.AppDir, cacheDir(j.AppDir), filepath.Join(j.AppDir, versionsName)} {
		if err := dirs.MkdirAll(d, 0o755); err != nil {
			return nil, access.Explain(err, AppDirSetting)
		}
	}
	wait := j.LockTimeout
	if wait == 0 {
		wait = 10 * time.Minute
	}
	release, err = lockFile(ctx, filepath.Join(j.AppDir, ".llamaboot-install.lock"), wait, j.Printer)
	if err != nil {
		return nil, err
	}
	// The app dir passing CheckPath covers the names in it; what the
	// install then works in by path below it (the cache, the versions and
	// their bundles, a legacy llama-cpp dir) must be just as closed to
	// others: a subdirectory chowned to a user, opened to anyone or a
	// user's link there would let them swap a staging dir, a bundle or the
	// executable root runs. Checked under the lock, before anything there
	// is removed or written.
	if err := checkAppDir(ctx, j.AppDir); err != nil {
		release()
		return nil, err
	}
	cleanStale(j.AppDir)
	if v, ok := recoverLink(j.AppDir); ok {
		j.Printer.Warnf("%s was missing (an earlier install was interrupted); restored version %s", InstallDir(j.AppDir), v)
	}
	return release, nil
}

// upToDate reports whether the installed bundle came from this very source
// (label), judged by size, mtime and inode of source and cache (or, with
// Verify, by hashing). local is nil for a downloaded source, which is
// judged by the cached file alone.
func (j *job) upToDate(label string, local fs.FileInfo) (Result, bool) {
	if j.Force {
		return Result{}, false
	}
	m, ok := j.matches(InstallDir(j.AppDir), label, local)
	if ok {
		// The active bundle is also judged by its cache copy, which a
		// later install may have replaced under the same name.
		cache, cok := statStamp(m.CachePath)
		ok = cok && cache == m.CacheStamp
	}
	return Result{Marker: m, UpToDate: ok}, ok
}

// matches reports whether the bundle at dir came from this very source.
func (j *job) matches(dir, label string, local fs.FileInfo) (Marker, bool) {
	m, err := ReadMarker(dir)
	if err != nil || m.SHA256 == "" || m.SourcePath != label {
		return Marker{}, false
	}
	if j.SHA256 != "" && j.SHA256 != m.SHA256 {
		return Marker{}, false
	}
	if fi, err := os.Stat(filepath.Join(dir, "bin", "llama-server")); err != nil || !fi.Mode().IsRegular() {
		return Marker{}, false
	}
	if j.Verify {
		file := m.CachePath
		if local != nil {
			file = label
		}
		sum, err := sumFile(file, local != nil)
		if err != nil || sum != m.SHA256 {
			return Marker{}, false
		}
		j.Printer.Stepf("verified: %s hashes to the bundle's sha256", file)
		return m, true
	}
	if local != nil {
		// A kept bundle is judged by its source's stamp alone: the cache
		// may since hold another archive of the same name.
		return m, stampOf(local) == m.SourceStamp
	}
	cache, ok := statStamp(m.CachePath)
	return m, ok && cache == m.CacheStamp
}

// sumFile hashes a bundle's archive: the user's own file by its path as
// given (a link root or we own is followed, dirs.OpenRegular), the cache's
// copy through package dirs as every file of the app dir.
func sumFile(path string, users bool) (string, error) {
	if !users {
		return fetch.SumFile(path)
	}
	f, err := dirs.OpenRegular(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return fetch.SumReader(f)
}

// installLocked runs the steps after the source is known, under the lock.
// The staging owns every half-made thing and removes what was not kept.
func (j *job) installLocked(ctx context.Context, src source) (Result, error) {
	j.shareBudget()
	s := j.stageSource(src)
	defer s.cleanup()
	if err := j.stepUnpack(ctx, s); err != nil {
		return Result{}, err
	}
	j.step("extracted")
	if err := j.stepVerify(s); err != nil {
		return Result{}, err
	}
	if err := j.stepLayout(s); err != nil {
		return Result{}, err
	}
	if err := j.stepMarker(s); err != nil {
		return Result{}, err
	}
	if err := j.stepCommitCache(s); err != nil {
		return Result{}, err
	}
	return j.stepActivate(s)
}

// shareBudget gives the install one work budget for the extraction and
// every audit after it (archive.Budget), so --max-entries' budget bounds the
// whole install, as the promise of 10 s at worst is about. Called once the
// context is final (signals watched).
func (j *job) shareBudget() {
	j.Limits.Budget = archive.NewBudget(j.Limits)
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
func unpack(ctx context.Context, r io.Reader, srcPath string, format archive.Format, root *os.Root, copyTo string, lim archive.Limits, prog io.Writer) (sum string, stats archive.Stats, err error) {
	h := sha256.New()
	sinks := []io.Writer{h, prog}
	var cache *os.File
	if copyTo != "" {
		cache, err = appfile.OpenFile(copyTo, os.O_WRONLY|os.O_TRUNC, 0o644)
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
		zf, err := dirs.OpenRegular(zipPath)
		if err != nil {
			return "", stats, err
		}
		defer zf.Close()
		fi, err := zf.Stat()
		if err != nil {
			return "", stats, err
		}
		stats, err = archive.ExtractZip(ctxReaderAt{ctx, zf}, fi.Size(), root, lim)
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

// Shown is how a package source may be printed: a URL without its
// credentials, query or fragment; a path as it is.
func Shown(src string) string {
	if fetch.LooksLikeURL(src) {
		return fetch.Redact(strings.TrimSpace(src))
	}
	return src
}
