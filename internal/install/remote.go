package install

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"

	"github.com/llamaboot/llamaboot/internal/fetch"
)

// installURL installs from an http(s) source: the bundle is downloaded into
// the cache (resumably) and installed from there. A boot whose cache already
// holds what the marker records for this URL does not touch the network.
func installURL(opts Options) (Result, error) {
	p := opts.Printer
	shown := fetch.Redact(opts.Source)
	if opts.SHA256From == "" && !opts.Refresh {
		if r, ok := upToDate(opts, nil); ok {
			p.Stepf("already installed: %s (sha256 %s…) from %s; nothing to do (server not contacted)", r.Marker.ArchiveName, r.Marker.SHA256[:12], shown)
			return r, nil
		}
	}
	release, err := lockApp(opts)
	if err != nil {
		return Result{}, err
	}
	defer release()
	if !opts.Refresh {
		if r, ok := upToDate(opts, nil); ok && opts.SHA256From == "" {
			p.Stepf("already installed by another process: %s; nothing to do", r.Marker.ArchiveName)
			return r, nil
		}
	}

	ctx := context.Background()
	name, err := urlFileName(opts.Source)
	if err != nil {
		return Result{}, err
	}
	d := opts.Download
	d.URL, d.Dest, d.Printer, d.Refresh = opts.Source, filepath.Join(cacheDir(opts.AppDir), name), p, opts.Refresh
	old, _ := ReadMarker(InstallDir(opts.AppDir))
	if old.SourcePath == shown {
		d.ETag, d.LastModified = old.ETag, old.LastModified
	}
	if opts.SHA256From != "" {
		sum, err := fetch.SumFromFile(ctx, d, opts.SHA256From, name)
		if err != nil {
			return Result{}, err
		}
		if opts.SHA256 != "" && opts.SHA256 != sum {
			return Result{}, &InputError{Msg: fmt.Sprintf("--sha256 %s disagrees with %s (%s)", opts.SHA256, fetch.Redact(opts.SHA256From), sum)}
		}
		opts.SHA256 = sum
		if r, ok := upToDate(opts, nil); ok && !opts.Refresh {
			p.Stepf("already installed: %s matches %s; nothing to do", r.Marker.ArchiveName, fetch.Redact(opts.SHA256From))
			return r, nil
		}
	}
	// A conditional request only makes sense for the bundle we hold.
	d.Refresh = opts.Refresh && old.SourcePath == shown
	d.SHA256 = opts.SHA256
	p.Stepf("downloading %s", shown)
	res, err := fetch.Fetch(ctx, d)
	if err != nil {
		return Result{}, downloadHints(err)
	}
	if res.NotModified {
		if r, ok := upToDate(Options{AppDir: opts.AppDir, Source: opts.Source, SHA256: opts.SHA256, Printer: p}, nil); ok {
			p.Stepf("%s is unchanged on the server (HTTP 304); nothing to do", shown)
			return r, nil
		}
		// The cached copy is gone or damaged: download it whole.
		d.Refresh = false
		if res, err = fetch.Fetch(ctx, d); err != nil {
			return Result{}, downloadHints(err)
		}
	}
	fi, err := os.Stat(res.Path)
	if err != nil {
		return Result{}, err
	}
	local := opts
	local.Source, local.origin, local.etag, local.lastModified = res.Path, shown, res.ETag, res.LastModified
	r, err := installLocked(local, fi)
	var ie *InputError
	if errors.As(err, &ie) {
		ie.Msg = shown + " (downloaded to " + res.Path + "): " + ie.Msg
	}
	return r, err
}

// urlFileName is the cache name of a bundle URL: its last path element.
func urlFileName(source string) (string, error) {
	u, err := url.Parse(source)
	if err != nil {
		return "", &InputError{Msg: fmt.Sprintf("%s is not a valid URL", fetch.Redact(source))}
	}
	name := path.Base(u.Path)
	if name == "/" || name == "." || name == ".." || name == "" {
		return "", &InputError{Msg: fmt.Sprintf("%s names no file (its path ends in %q); give the archive's own URL, such as https://host/llama-b7300-bin-ubuntu-x64.tar.gz", fetch.Redact(source), name)}
	}
	return name, nil
}

// downloadHints adds to a download error what a bundle's user can change.
func downloadHints(err error) error {
	err = fetch.AddHint(err, fetch.Unauthorized, "the token comes from AUTO_INFER_LLAMA_CPP_PKG_TOKEN")
	err = fetch.AddHint(err, fetch.TooLarge, "raise --max-download")
	err = fetch.AddHint(err, fetch.Checksum, "fix AUTO_INFER_LLAMA_CPP_PKG_SHA256 / --sha256 or the file; nothing was installed")
	return fetch.AddHint(err, fetch.NoSpace, "free space in the app dir's cache/")
}
