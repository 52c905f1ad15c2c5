// Package fetch downloads a bundle from an http(s) URL into the cache:
// streamed and hashed as it arrives, resumed with Range after a cut,
// retried on network errors and 5xx, bounded in size and stall time.
package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/llamaboot/llamaboot/internal/printer"
)

// IsURL reports whether a package source is an http(s) URL.
func IsURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// Redact returns u without credentials or query (presigned URLs carry
// secrets there): what logs and the marker show.
func Redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	p.User = nil
	if p.RawQuery != "" {
		p.RawQuery = "REDACTED"
	}
	p.Fragment = ""
	return p.String()
}

// Options say what to fetch and how patiently.
type Options struct {
	URL      string
	CacheDir string
	Token    string // bearer token (AUTO_INFER_LLAMA_CPP_PKG_TOKEN), never printed
	// Validators of the copy in the cache, for --refresh's conditional request.
	ETag, LastModified string
	Refresh            bool

	MaxBytes       int64         // largest download accepted (default 64 GiB)
	ConnectTimeout time.Duration // default 30s
	StallTimeout   time.Duration // no byte for this long aborts an attempt (default 60s)
	Retries        int           // attempts after the first
	RetryBase      time.Duration // first retry delay, doubling (default 1s)
	Client         *http.Client  // default: proxies from the environment, system CAs (SSL_CERT_FILE)
	Printer        *printer.Printer
}

func (o *Options) defaults() {
	if o.MaxBytes <= 0 {
		o.MaxBytes = 64 << 30
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 30 * time.Second
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 60 * time.Second
	}
	o.Retries = max(o.Retries, 0)
	if o.RetryBase <= 0 {
		o.RetryBase = time.Second
	}
	if o.Client == nil {
		o.Client = NewClient(o.ConnectTimeout)
	}
}

// NewClient is an HTTP client honouring HTTPS_PROXY/HTTP_PROXY/NO_PROXY and
// the system CAs (SSL_CERT_FILE / SSL_CERT_DIR), with bounded connection
// setup. Authorization headers are not forwarded to other hosts on redirect.
func NewClient(connect time.Duration) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   connect,
		ResponseHeaderTimeout: 2 * connect,
		ForceAttemptHTTP2:     true,
	}}
}

// Result is a complete download in the cache.
type Result struct {
	Path         string // the archive in the cache
	SHA256       string // computed while downloading; "" when NotModified
	NotModified  bool   // --refresh found the cached copy current
	ETag         string
	LastModified string
}

// Error is a URL that cannot give a bundle: 4xx, too large, or a bad URL.
// Network trouble and 5xx after retries are plain errors (exit 1).
type Error struct {
	URL    string
	Status int
	Msg    string
}

func (e *Error) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("%s: HTTP %d %s: %s", e.URL, e.Status, http.StatusText(e.Status), e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.URL, e.Msg)
}

// BadInput marks the error as the user's input at fault.
func (e *Error) BadInput() bool { return true }

// partState is what survives between attempts (and runs) of one download.
type partState struct {
	URL          string `json:"url"` // redacted
	Name         string `json:"name"`
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"last_modified,omitempty"`
	Total        int64  `json:"total"`
}

// Fetch downloads o.URL into o.CacheDir and returns the cached file.
func Fetch(ctx context.Context, o Options) (Result, error) {
	o.defaults()
	shown := Redact(o.URL)
	if _, err := url.ParseRequestURI(o.URL); err != nil {
		return Result{}, &Error{URL: shown, Msg: "not a valid URL"}
	}
	if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
		return Result{}, err
	}
	key := sha256.Sum256([]byte(o.URL))
	part := filepath.Join(o.CacheDir, ".dl-"+hex.EncodeToString(key[:8]))
	var last error
	for attempt := 0; attempt <= o.Retries; attempt++ {
		if attempt > 0 {
			delay := o.RetryBase << (attempt - 1)
			o.Printer.Warnf("download of %s failed (%v); retry %d/%d in %s", shown, last, attempt, o.Retries, delay)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return Result{}, ctx.Err()
			}
		}
		res, err := attemptFetch(ctx, o, part)
		if err == nil {
			return res, nil
		}
		var fe *Error
		if errors.As(err, &fe) || ctx.Err() != nil {
			return Result{}, err
		}
		last = err
	}
	return Result{}, fmt.Errorf("download %s: giving up after %d attempts: %w (the partial download is kept and resumed next time)", shown, o.Retries+1, last)
}

func readState(p string) (partState, int64) {
	var st partState
	b, err := os.ReadFile(p + ".json")
	if err != nil || json.Unmarshal(b, &st) != nil {
		return partState{}, 0
	}
	fi, err := os.Stat(p + ".part")
	if err != nil {
		return partState{}, 0
	}
	return st, fi.Size()
}

func writeState(p string, st partState) error {
	b, _ := json.Marshal(st)
	return os.WriteFile(p+".json", b, 0o644)
}

// errRetry marks an attempt failure worth retrying (5xx, cut connection).
type errRetry struct{ error }

func attemptFetch(ctx context.Context, o Options, part string) (Result, error) {
	shown := Redact(o.URL)
	st, have := readState(part)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.URL, nil)
	if err != nil {
		return Result{}, &Error{URL: shown, Msg: err.Error()}
	}
	req.Header.Set("User-Agent", "llamaboot")
	if o.Token != "" {
		req.Header.Set("Authorization", "Bearer "+o.Token)
	}
	resuming := have > 0 && (st.ETag != "" || st.LastModified != "")
	switch {
	case resuming:
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", have))
		if st.ETag != "" {
			req.Header.Set("If-Range", st.ETag)
		} else {
			req.Header.Set("If-Range", st.LastModified)
		}
	case o.Refresh && o.ETag != "":
		req.Header.Set("If-None-Match", o.ETag)
	case o.Refresh && o.LastModified != "":
		req.Header.Set("If-Modified-Since", o.LastModified)
	}
	resp, err := o.Client.Do(req)
	if err != nil {
		return Result{}, errRetry{err}
	}
	defer resp.Body.Close()
	name := path.Base(resp.Request.URL.Path) // after redirects
	if name == "/" || name == "." || name == "" {
		return Result{}, &Error{URL: shown, Msg: "the URL names no file; give the archive's own URL"}
	}
	switch {
	case resp.StatusCode == http.StatusNotModified:
		return Result{NotModified: true, Path: filepath.Join(o.CacheDir, name), ETag: o.ETag, LastModified: o.LastModified}, nil
	case resp.StatusCode >= 500:
		return Result{}, errRetry{fmt.Errorf("HTTP %d", resp.StatusCode)}
	case resp.StatusCode >= 400:
		hint := "check the URL"
		if resp.StatusCode == 401 || resp.StatusCode == 403 {
			hint = "check the URL and AUTO_INFER_LLAMA_CPP_PKG_TOKEN"
		}
		return Result{}, &Error{URL: shown, Status: resp.StatusCode, Msg: hint}
	case resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent:
		return Result{}, &Error{URL: shown, Status: resp.StatusCode, Msg: "unexpected response"}
	}

	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	offset := int64(0)
	if resp.StatusCode == http.StatusPartialContent && resuming {
		if start := rangeStart(resp.Header.Get("Content-Range")); start != have {
			return Result{}, errRetry{fmt.Errorf("server resumed at byte %d, not %d", start, have)}
		}
		flags, offset = os.O_WRONLY|os.O_APPEND, have
		o.Printer.Stepf("resuming %s at %s", name, printer.Bytes(have))
	} else if resuming {
		o.Printer.Stepf("the server sent %s whole (no Range support, or it changed); starting over", name)
	}
	total := int64(-1)
	if resp.ContentLength >= 0 {
		total = offset + resp.ContentLength
	}
	if total > o.MaxBytes {
		return Result{}, &Error{URL: shown, Msg: fmt.Sprintf("is %s, over the %s download limit (raise --max-download)", printer.Bytes(total), printer.Bytes(o.MaxBytes))}
	}
	st = partState{URL: shown, Name: name, ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified"), Total: total}
	if err := writeState(part, st); err != nil {
		return Result{}, err
	}
	f, err := os.OpenFile(part+".part", flags, 0o644)
	if err != nil {
		return Result{}, err
	}
	defer f.Close()

	h := sha256.New()
	if offset > 0 {
		// Hash what an earlier attempt already wrote.
		prev, err := os.Open(part + ".part")
		if err != nil {
			return Result{}, err
		}
		_, err = io.Copy(h, io.LimitReader(prev, offset))
		prev.Close()
		if err != nil {
			return Result{}, err
		}
	}
	prog := o.Printer.Progress("downloading "+name, max(total, 0))
	prog.Add(int(offset))
	body := &stallReader{r: resp.Body, timeout: o.StallTimeout, cancel: cancel}
	n, err := io.CopyBuffer(io.MultiWriter(f, h, prog, &limit{max: o.MaxBytes - offset, url: shown}), body, make([]byte, 1<<20))
	prog.Done()
	if err != nil {
		var fe *Error
		if errors.As(err, &fe) {
			os.Remove(part + ".part")
			os.Remove(part + ".json")
			return Result{}, err
		}
		if body.stalled.Load() {
			err = fmt.Errorf("no data for %s", o.StallTimeout)
		}
		// Keep what arrived: the next attempt resumes from it.
		return Result{}, errRetry{err}
	}
	if total >= 0 && offset+n != total {
		return Result{}, errRetry{fmt.Errorf("got %d of %d bytes", offset+n, total)}
	}
	if err := f.Sync(); err != nil {
		return Result{}, err
	}
	final := filepath.Join(o.CacheDir, name)
	if err := os.Rename(part+".part", final); err != nil {
		return Result{}, err
	}
	os.Remove(part + ".json")
	return Result{Path: final, SHA256: hex.EncodeToString(h.Sum(nil)), ETag: st.ETag, LastModified: st.LastModified}, nil
}

func rangeStart(cr string) int64 {
	// "bytes 100-199/200"
	s, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return -1
	}
	s, _, _ = strings.Cut(s, "-")
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// limit fails the copy once more than max bytes have come.
type limit struct {
	max int64
	n   int64
	url string
}

func (l *limit) Write(b []byte) (int, error) {
	l.n += int64(len(b))
	if l.n > l.max {
		return 0, &Error{URL: l.url, Msg: "download exceeds the size limit (raise --max-download)"}
	}
	return len(b), nil
}

// stallReader cancels the request when no byte arrives for timeout.
type stallReader struct {
	r       io.Reader
	timeout time.Duration
	cancel  context.CancelFunc
	timer   *time.Timer
	stalled atomic.Bool
}

func (s *stallReader) Read(p []byte) (int, error) {
	if s.timer == nil {
		s.timer = time.AfterFunc(s.timeout, func() { s.stalled.Store(true); s.cancel() })
	} else {
		s.timer.Reset(s.timeout)
	}
	n, err := s.r.Read(p)
	if err != nil {
		s.timer.Stop()
	}
	return n, err
}

// SumFromFile fetches a SHA256SUMS-style file and returns the digest listed
// for name.
func SumFromFile(ctx context.Context, o Options, sumsURL, name string) (string, error) {
	o.defaults()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sumsURL, nil)
	if err != nil {
		return "", &Error{URL: Redact(sumsURL), Msg: err.Error()}
	}
	if o.Token != "" {
		req.Header.Set("Authorization", "Bearer "+o.Token)
	}
	resp, err := o.Client.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetch %s: %w", Redact(sumsURL), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", &Error{URL: Redact(sumsURL), Status: resp.StatusCode, Msg: "cannot read the checksum file"}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && strings.TrimPrefix(f[1], "*") == name && len(f[0]) == 64 {
			return strings.ToLower(f[0]), nil
		}
	}
	return "", &Error{URL: Redact(sumsURL), Msg: fmt.Sprintf("lists no sha256 for %s", name)}
}
