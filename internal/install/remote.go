package install

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"

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
	d := opts.Download
	d.URL, d.CacheDir, d.Printer, d.Refresh = opts.Source, cacheDir(opts.AppDir), p, opts.Refresh
	old, _ := ReadMarker(InstallDir(opts.AppDir))
	if old.SourcePath == shown {
		d.ETag, d.LastModified = old.ETag, old.LastModified
	}
	if opts.SHA256From != "" {
		u, _ := url.Parse(opts.Source)
		sum, err := fetch.SumFromFile(ctx, d, opts.SHA256From, path.Base(u.Path))
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
	p.Stepf("downloading %s", shown)
	res, err := fetch.Fetch(ctx, d)
	if err != nil {
		return Result{}, err
	}
	if res.NotModified {
		if r, ok := upToDate(Options{AppDir: opts.AppDir, Source: opts.Source, SHA256: opts.SHA256, Printer: p}, nil); ok {
			p.Stepf("%s is unchanged on the server (HTTP 304); nothing to do", shown)
			return r, nil
		}
		if _, err := os.Stat(res.Path); err != nil {
			// The cached copy is gone: download it whole.
			d.Refresh = false
			if res, err = fetch.Fetch(ctx, d); err != nil {
				return Result{}, err
			}
		}
	}
	if res.SHA256 != "" && opts.SHA256 != "" && res.SHA256 != opts.SHA256 {
		_ = os.Remove(res.Path)
		return Result{}, &InputError{Msg: fmt.Sprintf("checksum mismatch for %s: expected sha256 %s, got %s; nothing was installed", shown, opts.SHA256, res.SHA256)}
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
