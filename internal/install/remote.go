package install

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/llamaboot/llamaboot/internal/fetch"
)

// runURL installs from an http(s) source: the bundle is downloaded into
// the cache (resumably) and installed from there. A boot whose cache already
// holds what the marker records for this URL does not touch the network.
func (j *job) runURL(ctx context.Context) (Result, error) {
	p := j.Printer
	shown := fetch.Redact(j.Source)
	name, err := urlFileName(j.Source)
	if err != nil {
		return Result{}, err
	}
	if j.SHA256From == "" && !j.Refresh {
		if r, ok := j.upToDate(shown, nil); ok {
			p.Stepf("already installed: %s (sha256 %s…) from %s; nothing to do (server not contacted)", r.Marker.ArchiveName, r.Marker.SHA256[:12], shown)
			return r, nil
		}
	}
	release, err := j.lock(ctx)
	if err != nil {
		return Result{}, err
	}
	defer release()
	if !j.Refresh {
		if r, ok := j.upToDate(shown, nil); ok && j.SHA256From == "" {
			p.Stepf("already installed by another process: %s; nothing to do", r.Marker.ArchiveName)
			return r, nil
		}
		if v, m, ok := j.keptMatch(shown, nil); ok && j.SHA256From == "" {
			return j.reactivate(v, m, "reactivated kept bundle")
		}
	}
	src, r, err := j.download(ctx, name)
	if err != nil || r.UpToDate {
		return r, err
	}
	return j.installLocked(ctx, src)
}

// download is the source step for a URL: the pin (from --sha256-from if
// given), then the download into the cache, checked against the pin before
// it is renamed into place. A Result with UpToDate means nothing is to do.
func (j *job) download(ctx context.Context, name string) (source, Result, error) {
	p := j.Printer
	shown := fetch.Redact(j.Source)
	d := j.Download
	d.URL, d.Dest, d.Printer, d.Label = j.Source, filepath.Join(cacheDir(j.AppDir), name), p, name
	old, _ := ReadMarker(InstallDir(j.AppDir))
	if old.SourcePath == shown {
		d.ETag, d.LastModified = old.ETag, old.LastModified
	}
	if j.SHA256From != "" {
		sum, err := fetch.SumFromFile(ctx, d, j.SHA256From, name)
		if err != nil {
			return source{}, Result{}, err
		}
		if j.SHA256 != "" && j.SHA256 != sum {
			return source{}, Result{}, &InputError{Msg: fmt.Sprintf("--sha256 %s disagrees with %s (%s)", j.SHA256, fetch.Redact(j.SHA256From), sum)}
		}
		j.SHA256 = sum
		if r, ok := j.upToDate(shown, nil); ok && !j.Refresh {
			p.Stepf("already installed: %s matches %s; nothing to do", r.Marker.ArchiveName, fetch.Redact(j.SHA256From))
			return source{}, r, nil
		}
	}
	// A conditional request only makes sense for the bundle we hold.
	d.Refresh = j.Refresh && old.SourcePath == shown
	d.SHA256 = j.SHA256
	p.Stepf("downloading %s", shown)
	res, err := fetch.Fetch(ctx, d)
	if err != nil {
		return source{}, Result{}, downloadHints(err)
	}
	if res.NotModified {
		plain := *j
		plain.Force, plain.Verify = false, false
		if r, ok := plain.upToDate(shown, nil); ok {
			p.Stepf("%s is unchanged on the server (HTTP 304); nothing to do", shown)
			return source{}, r, nil
		}
		// The cached copy is gone or damaged: download it whole.
		d.Refresh = false
		if res, err = fetch.Fetch(ctx, d); err != nil {
			return source{}, Result{}, downloadHints(err)
		}
	}
	fi, err := os.Stat(res.Path)
	if err != nil {
		return source{}, Result{}, err
	}
	// The name after redirects (…/latest → llama-b7300-….zip) tells the
	// build better than the URL's own.
	if res.Name != name && validFileName(res.Name) {
		name = res.Name
	}
	return source{path: res.Path, info: fi, label: shown, name: name, etag: res.ETag, lastModified: res.LastModified}, Result{}, nil
}

// urlFileName is the cache name of a bundle URL: its last path element.
func urlFileName(source string) (string, error) {
	u, err := url.Parse(source)
	if err != nil {
		return "", &InputError{Msg: fmt.Sprintf("%s is not a valid URL", fetch.Redact(source))}
	}
	name := path.Base(u.Path)
	if strings.HasSuffix(u.Path, "/") {
		name = "/" // a directory listing, not an archive, whatever comes before the slash
	}
	if fetch.HasControl(name) {
		return "", &InputError{Msg: fmt.Sprintf("%s names a file with control characters (%q, percent-encoded in the URL); give the archive's own name", fetch.Redact(source), name)}
	}
	if !validFileName(name) {
		return "", &InputError{Msg: fmt.Sprintf("%s names no file (its path ends in %q); give the archive's own URL, such as https://host/llama-b7300-bin-ubuntu-x64.tar.gz", fetch.Redact(source), name)}
	}
	return name, nil
}

func validFileName(name string) bool {
	return name != "/" && name != "." && name != ".." && name != "" && !fetch.HasControl(name)
}

// downloadHints adds to a download error what a bundle's user can change.
func downloadHints(err error) error {
	err = fetch.AddHint(err, fetch.Unauthorized, "the token comes from AUTO_INFER_LLAMA_CPP_PKG_TOKEN")
	err = fetch.AddHint(err, fetch.TooLarge, "raise --max-download")
	err = fetch.AddHint(err, fetch.Checksum, "fix AUTO_INFER_LLAMA_CPP_PKG_SHA256 / --sha256 or the file; nothing was installed")
	return fetch.AddHint(err, fetch.NoSpace, "free space in the app dir's cache/")
}
