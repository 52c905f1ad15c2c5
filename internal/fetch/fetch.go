// Package fetch downloads one file from an http(s) URL to a destination the
// caller chooses: streamed and hashed as it arrives, checked against an
// expected SHA-256 before it is renamed into place, resumed with Range after
// a cut (the .part file survives across runs), retried on network errors and
// 5xx, bounded in size, disk space and stall time, and stopped by its
// context. Every error and warning it gives out has the secrets in URLs
// redacted. It knows nothing of bundles or models: callers add their hints
// (which variable holds the token, which flag raises a limit) to *Error.
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
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/llamaboot/llamaboot/internal/appfile"
	"github.com/llamaboot/llamaboot/internal/dirs"
	"github.com/llamaboot/llamaboot/internal/printer"
)

// IsURL reports whether a source is an http(s) URL.
//
// The scheme is matched in any case and around spaces (HTTPS://, or a YAML
// value with a stray newline): such a value is a URL that must be redacted,
// never a file name to print whole.
func IsURL(s string) bool {
	s = strings.ToLower(strings.TrimSpace(s))
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// LooksLikeURL reports whether s has any scheme:// prefix — a URL, even one
// of a scheme llamaboot does not fetch, so it must be redacted, not shown.
func LooksLikeURL(s string) bool {
	scheme, _, ok := strings.Cut(strings.TrimSpace(s), "://")
	return ok && LeadingName(scheme, "+.-") == len(scheme) && scheme != ""
}

// LeadingName is the length of s's leading name: a letter, then letters,
// digits and the bytes of also (an RFC 3986 scheme: "+.-"). A loop, not a
// regexp: commands that never fetch should not compile one.
func LeadingName(s, also string) int {
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := 'a' <= c|0x20 && c|0x20 <= 'z'
		if !letter && (i == 0 || !('0' <= c && c <= '9' || strings.IndexByte(also, c) >= 0)) {
			return i
		}
	}
	return len(s)
}

// checkURL refuses a URL that cannot be fetched as written, without
// echoing it: one Go cannot parse, or one holding spaces, quotes or control
// characters, could not be redacted reliably inside the parser's message.
func checkURL(raw string) error {
	if strings.ContainsAny(raw, " \t\r\n\"'<>\\") || strings.ContainsFunc(raw, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return &Error{URL: "(URL not shown: it may hold secrets)", Kind: BadURL, Msg: "contains spaces, quotes or control characters; percent-encode them (or remove a stray newline)"}
	}
	u, err := url.ParseRequestURI(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &Error{URL: Redact(raw), Kind: BadURL, Msg: "not a valid http(s) URL"}
	}
	return nil
}

// Options say what to fetch, where to, and how patiently.
type Options struct {
	URL  string
	Dest string // final path; Dest+".part" and Dest+".part.json" hold a download in progress
	// SHA256 is the expected digest (hex), checked before the rename into
	// place; a mismatch removes the download. Empty: not checked.
	SHA256 string
	// Token is sent as a bearer token to URL's own scheme, host and port
	// only: never after a redirect elsewhere. Never printed.
	Token string
	// Validators of the copy at Dest, for Refresh's conditional request.
	ETag, LastModified string
	Refresh            bool

	MaxBytes       int64         // largest download accepted (default 64 GiB)
	ConnectTimeout time.Duration // default 30s
	StallTimeout   time.Duration // no byte for this long aborts an attempt (default 60s)
	// MinRate is the least average rate, in bytes per second, over each
	// StallTimeout window (0: DefaultMinRate; negative: none, any byte
	// will do): a server trickling a byte now and then cannot keep a
	// download alive forever.
	MinRate   int64
	Retries   int           // attempts after the first
	RetryBase time.Duration // first retry delay, doubling (default 1s)
	// LockTimeout bounds the wait for another process downloading the
	// same file while its .part does not grow (default 10m).
	LockTimeout time.Duration
	// DestLocked says the caller already holds the lock for Dest
	// (LockPath), as package models does around the whole fetch.
	DestLocked bool
	// Client defaults to NewClient; its CheckRedirect is replaced by the
	// redirect policy above (no https→http, no token to another origin).
	Client  *http.Client
	Printer *printer.Printer
	Label   string // names the download in progress lines (default: Dest's base name)
	// OnProgress, when set, is called as bytes arrive with the bytes held
	// so far and the total (-1 when the server does not say).
	OnProgress func(done, total int64)
}

// DefaultMaxBytes is the download size limit when Options.MaxBytes is 0.
const DefaultMaxBytes = 64 << 30

// DefaultMinRate is the least rate (bytes per second over each stall
// window) when Options.MinRate is 0.
const DefaultMinRate = 1 << 10

func (o *Options) defaults() {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 30 * time.Second
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 60 * time.Second
	}
	if o.MinRate == 0 {
		o.MinRate = DefaultMinRate
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = 10 * time.Minute
	}
	o.Retries = max(o.Retries, 0)
	if o.RetryBase <= 0 {
		o.RetryBase = time.Second
	}
	if o.Client == nil {
		o.Client = NewClient(o.ConnectTimeout)
	}
	c := *o.Client
	c.CheckRedirect = checkRedirect
	o.Client = &c
	if o.Label == "" {
		o.Label = filepath.Base(o.Dest)
	}
}

// NewClient is an HTTP client honouring HTTPS_PROXY/HTTP_PROXY/NO_PROXY and
// the system CAs (SSL_CERT_FILE / SSL_CERT_DIR), with bounded connection
// setup.
func NewClient(connect time.Duration) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   connect,
		ResponseHeaderTimeout: 2 * connect,
		ForceAttemptHTTP2:     true,
	}}
}

var errDowngrade = errors.New("redirected from https to plain http")

// checkRedirect refuses https→http (the rest of the download, and any
// header, would travel unprotected) and drops the bearer token once the
// chain has left the first request's origin. Go's own check compares host
// names only, so it would send the token to another port or over http.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if via[len(via)-1].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return errDowngrade
	}
	// Go sends the previous URL as Referer, query included: a presigned
	// signature would reach the next host. Nothing here needs a Referer.
	req.Header.Del("Referer")
	for _, r := range append(via[1:], req) {
		if !sameOrigin(via[0].URL, r.URL) {
			req.Header.Del("Authorization")
			break
		}
	}
	return nil
}

func sameOrigin(a, b *url.URL) bool {
	return a.Scheme == b.Scheme && strings.EqualFold(a.Hostname(), b.Hostname()) && port(a) == port(b)
}

func port(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

// Result is a complete download at Dest.
type Result struct {
	Path         string // Dest
	Name         string // the file name the server gave (last URL path element, after redirects)
	SHA256       string // computed while downloading; "" when NotModified
	Size         int64
	NotModified  bool // Refresh found the copy at Dest current
	ETag         string
	LastModified string
}

// Kind says what is wrong with a URL that cannot give the file.
type Kind int

const (
	BadURL       Kind = iota + 1 // not an http(s) URL, or it names no file
	HTTPStatus                   // a 4xx (other than 401/403) or an unexpected status
	Unauthorized                 // 401 or 403: the token is missing or wrong
	TooLarge                     // over MaxBytes
	Checksum                     // the content does not hash to SHA256
	Insecure                     // an https→http redirect, refused
	NoSpace                      // the destination's file system has no room
)

// Error is a download that cannot succeed as asked: retrying will not help.
// All kinds but NoSpace are the user's input at fault (exit 2).
type Error struct {
	URL    string // redacted
	Status int
	Kind   Kind
	Msg    string
	Hint   string // what the caller's user can do; added by the caller
}

func (e *Error) Error() string {
	s := e.URL + ": "
	if e.Status != 0 {
		s += fmt.Sprintf("HTTP %d %s: ", e.Status, http.StatusText(e.Status))
	}
	s += e.Msg
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

// BadInput marks the error as the user's input at fault.
func (e *Error) BadInput() bool { return e.Kind != NoSpace }

// AddHint sets the hint of the *Error inside err whose kind is k, if any,
// and returns err.
func AddHint(err error, k Kind, hint string) error {
	var fe *Error
	if errors.As(err, &fe) && fe.Kind == k {
		fe.Hint = hint
	}
	return err
}

// partState is what survives between attempts (and runs) of one download.
type partState struct {
	URL          string `json:"url"` // redacted
	Name         string `json:"name"`
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"last_modified,omitempty"`
	Total        int64  `json:"total"`
}

func (s partState) resumable() bool { return s.ETag != "" || s.LastModified != "" }

// Fetch downloads o.URL to o.Dest and returns the complete file. A
// cancelled context stops it promptly; what arrived stays in the .part file
// for the next call to resume.
func Fetch(ctx context.Context, o Options) (Result, error) {
	res, err := fetch(ctx, o)
	return res, RedactErr(err)
}

func fetch(ctx context.Context, o Options) (Result, error) {
	o.defaults()
	o.URL = strings.TrimSpace(o.URL)
	if err := checkURL(o.URL); err != nil {
		return Result{}, err
	}
	shown := Redact(o.URL)
	if o.Dest == "" {
		return Result{}, errors.New("fetch: no destination")
	}
	o.SHA256 = strings.ToLower(strings.TrimSpace(o.SHA256))
	if b, err := hex.DecodeString(o.SHA256); o.SHA256 != "" && (err != nil || len(b) != sha256.Size) {
		return Result{}, &Error{URL: shown, Kind: Checksum, Msg: fmt.Sprintf("expected sha256 %q is not 64 hex characters", o.SHA256)}
	}
	// Every file of the download is reached through the directory opened
	// once here: no link another user owns is followed to it, and a swap of
	// a parent afterwards changes nothing of where the files go.
	dir, err := dirs.Make(filepath.Dir(o.Dest), 0o755)
	if err != nil {
		return Result{}, err
	}
	defer dir.Close()
	part := sideFiles{dir: dir, name: filepath.Base(o.Dest) + ".part"}
	// One download per destination at a time, across processes (fetch-models
	// beside entry, replicas on a shared volume): two writers appending to
	// one .part would make a file no single response produced.
	if !o.DestLocked {
		unlock, err := lockDest(ctx, o, part, shown)
		if err != nil {
			return Result{}, err
		}
		defer unlock()
	}
	if done, ok := completedMeanwhile(o, part); ok {
		return done, nil
	}
	var last error
	for attempt := 0; attempt <= o.Retries; attempt++ {
		if attempt > 0 {
			delay := o.RetryBase << (attempt - 1)
			o.Printer.Warnf("download of %s failed (%v); retry %d/%d in %s", shown, RedactErr(last), attempt, o.Retries, delay)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return Result{}, fmt.Errorf("download of %s stopped: %w%s", shown, context.Cause(ctx), kept(part))
			}
		}
		res, err := attemptFetch(ctx, &o, part)
		if err == nil {
			return res, nil
		}
		if ctx.Err() != nil {
			return Result{}, fmt.Errorf("download of %s stopped: %w%s", shown, context.Cause(ctx), kept(part))
		}
		var r errRetry
		if !errors.As(err, &r) {
			return Result{}, err
		}
		last = r.error
	}
	return Result{}, fmt.Errorf("download %s: giving up after %d attempts: %w%s", shown, o.Retries+1, last, kept(part))
}

// sideFiles names a download's .part file in its opened directory; its
// state is the .part.json beside it.
type sideFiles struct {
	dir  *dirs.Dir
	name string
}

func (s sideFiles) String() string { return s.dir.Join(s.name) }

// size is the .part's size (-1 when there is none), for a waiter to see
// the holder of the lock progress.
func (s sideFiles) size() int64 {
	if _, n, err := s.dir.Lstat(s.name); err == nil {
		return n
	}
	return -1
}

func (s sideFiles) remove() {
	_ = s.dir.Remove(s.name)
	_ = s.dir.Remove(s.name + ".json")
}

// lockDest takes an exclusive lock beside the destination, waiting (and
// saying so once) while another process downloads the same file, until
// ctx ends or the holder makes no progress for o.LockTimeout.
func lockDest(ctx context.Context, o Options, part sideFiles, shown string) (func(), error) {
	unlock, err := appfile.LockEphemeral(ctx, LockPath(o.Dest), o.LockTimeout, func(int) {
		o.Printer.Stepf("another process is downloading %s; waiting for it", shown)
	}, Growth(part.size, o.MinRate, o.LockTimeout))
	if err != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("download of %s stopped while waiting for another download of it: %w", shown, context.Cause(ctx))
	}
	return unlock, err
}

// completedMeanwhile reports a download that another process finished
// while we waited for the lock: the destination is there and, when a pin is
// given, hashes to it. Without a pin the caller's own marker logic decides,
// so this only short-cuts the pinned case.
func completedMeanwhile(o Options, part sideFiles) (Result, bool) {
	if o.SHA256 == "" {
		return Result{}, false
	}
	if part.size() >= 0 {
		return Result{}, false // a resumable part: the download is not finished
	}
	f, err := part.dir.OpenFile(filepath.Base(o.Dest), os.O_RDONLY, 0)
	if err != nil {
		return Result{}, false
	}
	defer f.Close()
	sum, n, err := sumOf(f)
	if err != nil || sum != o.SHA256 {
		return Result{}, false
	}
	return Result{Path: o.Dest, Name: filepath.Base(o.Dest), SHA256: sum, Size: n}, true
}

// kept says what of a failed download the next run resumes from, and
// removes what it could not resume (no validator to ask the server
// whether the file is still the same).
func kept(part sideFiles) string {
	st, have := readState(part)
	if have == 0 || !st.resumable() {
		part.remove()
		return ""
	}
	return fmt.Sprintf(" (%s of it is kept in %s; the next run resumes from there)", printer.Bytes(have), part)
}

// maxState caps what is read of a .part.json: a few hundred bytes are
// written there; a link to /dev/zero or a huge file is no state.
const maxState = 64 << 10

func readState(p sideFiles) (partState, int64) {
	var st partState
	f, err := p.dir.OpenFile(p.name+".json", os.O_RDONLY, 0)
	if err != nil {
		return partState{}, 0
	}
	b, err := io.ReadAll(io.LimitReader(f, maxState+1))
	f.Close()
	if err != nil || len(b) > maxState || json.Unmarshal(b, &st) != nil {
		return partState{}, 0
	}
	m, size, err := p.dir.Lstat(p.name)
	if err != nil || !m.IsRegular() {
		return partState{}, 0
	}
	return st, size
}

func writeState(p sideFiles, st partState) error {
	b, _ := json.Marshal(st)
	return appfile.WriteIn(p.dir, p.name+".json", b, 0o644)
}

// errRetry marks an attempt failure worth retrying (5xx, cut connection).
type errRetry struct{ error }

func (e errRetry) Unwrap() error { return e.error }

// errLocal marks a failure writing the destination, not reading the network.
type errLocal struct{ error }

func (e errLocal) Unwrap() error { return e.error }

type localWriter struct{ f *os.File }

func (w localWriter) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	if err != nil {
		err = errLocal{err}
	}
	return n, err
}

func attemptFetch(ctx context.Context, o *Options, part sideFiles) (Result, error) {
	shown := Redact(o.URL)
	st, have := readState(part)
	if st.URL != shown {
		have = 0 // leftovers of another URL
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.URL, nil)
	if err != nil {
		return Result{}, &Error{URL: shown, Kind: BadURL, Msg: err.Error()}
	}
	req.Header.Set("User-Agent", "llamaboot")
	if o.Token != "" {
		req.Header.Set("Authorization", "Bearer "+o.Token)
	}
	resuming := have > 0 && st.resumable()
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
		if errors.Is(err, errDowngrade) {
			return Result{}, &Error{URL: shown, Kind: Insecure, Msg: "the server redirected from https to plain http; refused (the download would be unprotected)"}
		}
		return Result{}, errRetry{err}
	}
	defer resp.Body.Close()
	name := path.Base(resp.Request.URL.Path) // after redirects
	if HasControl(name) {
		return Result{}, &Error{URL: shown, Kind: BadURL, Msg: fmt.Sprintf("names a file with control characters (%q, percent-encoded in the URL); refused", name)}
	}
	switch {
	case resp.StatusCode == http.StatusNotModified:
		return Result{NotModified: true, Path: o.Dest, Name: name, ETag: o.ETag, LastModified: o.LastModified}, nil
	case resp.StatusCode >= 500:
		return Result{}, errRetry{fmt.Errorf("HTTP %d", resp.StatusCode)}
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return Result{}, &Error{URL: shown, Status: resp.StatusCode, Kind: Unauthorized, Msg: "check the URL and the access token"}
	case resp.StatusCode >= 400:
		return Result{}, &Error{URL: shown, Status: resp.StatusCode, Kind: HTTPStatus, Msg: "check the URL"}
	case resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent:
		return Result{}, &Error{URL: shown, Status: resp.StatusCode, Kind: HTTPStatus, Msg: "unexpected response"}
	}

	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	offset := int64(0)
	if resp.StatusCode == http.StatusPartialContent && !resuming {
		// A part of a file we did not ask for part of: taking it whole would
		// store a file cut short (or shifted) with nothing to say so.
		return Result{}, errRetry{fmt.Errorf("server answered 206 Partial Content (%s) to a request for the whole file", resp.Header.Get("Content-Range"))}
	}
	if resp.StatusCode == http.StatusPartialContent && resuming {
		if start := rangeStart(resp.Header.Get("Content-Range")); start != have {
			return Result{}, errRetry{fmt.Errorf("server resumed at byte %d, not %d", start, have)}
		}
		// If-Range asked for the rest only if the file is unchanged; a
		// server that ignores it would append another version's bytes to
		// the part. The rest is taken only with the same validator.
		if !sameVersion(st, resp.Header) {
			part.remove()
			return Result{}, errRetry{fmt.Errorf("the server resumed a different version of the file (%s); starting over", versionOf(resp.Header))}
		}
		flags, offset = os.O_RDWR|os.O_APPEND, have
		o.Printer.Stepf("resuming %s at %s", o.Label, printer.Bytes(have))
	} else if resuming {
		o.Printer.Stepf("the server sent %s whole (no Range support, or it changed); starting over", o.Label)
	}
	total := int64(-1)
	if resp.ContentLength >= 0 {
		total = offset + resp.ContentLength
	}
	if total > o.MaxBytes {
		return Result{}, &Error{URL: shown, Kind: TooLarge, Msg: fmt.Sprintf("is %s, over the %s download limit", printer.Bytes(total), printer.Bytes(o.MaxBytes))}
	}
	st = partState{URL: shown, Name: name, ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified"), Total: total}
	if err := writeState(part, st); err != nil {
		return Result{}, err
	}
	f, err := appfile.OpenIn(part.dir, part.name, flags&^os.O_CREATE, 0o644)
	if err != nil {
		return Result{}, err
	}
	defer f.Close()
	if total >= 0 {
		if err := reserve(f, offset, total-offset); err != nil {
			return Result{}, &Error{URL: shown, Kind: NoSpace, Msg: err.Error()}
		}
	}

	h := sha256.New()
	if offset > 0 {
		// Hash what an earlier attempt already wrote.
		if _, err := io.Copy(h, io.NewSectionReader(f, 0, offset)); err != nil {
			return Result{}, err
		}
	}
	prog := o.Printer.Download("downloading "+o.Label, max(total, 0), offset)
	sinks := []io.Writer{&limit{max: o.MaxBytes - offset, url: shown}, localWriter{f}, h, prog}
	if o.OnProgress != nil {
		o.OnProgress(offset, total)
		sinks = append(sinks, &progressFunc{fn: o.OnProgress, done: offset, total: total})
	}
	body := &stallReader{r: resp.Body, timeout: o.StallTimeout, minBytes: int64(o.StallTimeout.Seconds() * float64(o.MinRate)), cancel: cancel}
	n, err := io.CopyBuffer(io.MultiWriter(sinks...), body, make([]byte, 1<<20))
	prog.Done()
	if err != nil {
		var fe *Error
		var le errLocal
		switch {
		case errors.As(err, &fe):
			part.remove()
			return Result{}, err
		case errors.As(err, &le) && errors.Is(err, syscall.ENOSPC):
			return Result{}, &Error{URL: shown, Kind: NoSpace, Msg: fmt.Sprintf("the file system holding %s is full after %s", filepath.Dir(o.Dest), printer.Bytes(offset+n))}
		case errors.As(err, &le):
			return Result{}, fmt.Errorf("write %s: %w", part, le.error)
		case body.stalled.Load() && body.trickled.Load():
			err = fmt.Errorf("less than %s in %s (under %s/s, the --min-rate floor)", printer.Bytes(body.minBytes), o.StallTimeout, printer.Bytes(o.MinRate))
		case body.stalled.Load():
			err = fmt.Errorf("no data for %s", o.StallTimeout)
		}
		// Keep what arrived: the next attempt resumes from it.
		return Result{}, errRetry{err}
	}
	if total >= 0 && offset+n != total {
		return Result{}, errRetry{fmt.Errorf("got %d of %d bytes", offset+n, total)}
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if o.SHA256 != "" && sum != o.SHA256 {
		f.Close()
		part.remove()
		return Result{}, &Error{URL: shown, Kind: Checksum, Msg: fmt.Sprintf("checksum mismatch: expected sha256 %s, got %s; the download was removed", o.SHA256, sum)}
	}
	if err := f.Sync(); err != nil {
		return Result{}, err
	}
	if err := part.dir.Rename(part.name, filepath.Base(o.Dest)); err != nil {
		return Result{}, err
	}
	_ = part.dir.Sync()
	_ = part.dir.Remove(part.name + ".json")
	return Result{Path: o.Dest, Name: name, SHA256: sum, Size: offset + n, ETag: st.ETag, LastModified: st.LastModified}, nil
}

// SumFile returns the SHA-256 (hex) of the regular file at path, opened
// as llamaboot opens its own files (package dirs): no link another user
// owns followed on the way, no link at path itself, no waiting on a FIFO
// (O_NONBLOCK keeps even the open from blocking), nothing but a regular
// file read.
func SumFile(path string) (string, error) {
	sum, _, err := SumStat(path)
	return sum, err
}

// SumStat is SumFile with the description of the very file hashed (from
// the same descriptor), for a marker vouching for it.
func SumStat(path string) (string, os.FileInfo, error) {
	d, name, err := dirs.OpenParent(path, false, 0)
	if err != nil {
		return "", nil, err
	}
	defer d.Close()
	f, err := d.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", nil, err
	}
	sum, _, err := sumOf(f)
	return sum, fi, err
}

// SumReader returns the SHA-256 (hex) of what r holds.
func SumReader(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func sumOf(f *os.File) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// reserve makes sure the file system has room for n more bytes after
// offset: first a clear comparison with the free space, then an allocation
// beyond the end of the file (the file's size is unchanged, so resuming
// still counts only what arrived), which parallel downloads into the same
// file system see. File systems without fallocate only get the comparison.
func reserve(f *os.File, offset, n int64) error {
	if n <= 0 {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err == nil {
		if free := int64(st.Bavail) * st.Bsize; free < n {
			return fmt.Errorf("needs %s more but the file system holding %s has %s free", printer.Bytes(n), filepath.Dir(f.Name()), printer.Bytes(free))
		}
	}
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, offset, n)
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("needs %s more but the file system holding %s has not that much free", printer.Bytes(n), filepath.Dir(f.Name()))
	}
	return nil
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
		return 0, &Error{URL: l.url, Kind: TooLarge, Msg: "the download exceeds the size limit"}
	}
	return len(b), nil
}

type progressFunc struct {
	fn          func(done, total int64)
	done, total int64
}

func (p *progressFunc) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	p.fn(p.done, p.total)
	return len(b), nil
}

// stallReader cancels the request when less than minBytes (at least one)
// arrive in a window of timeout. The windows are fixed, not restarted by
// each read: a byte now and then no longer keeps a download alive.
type stallReader struct {
	r        io.Reader
	timeout  time.Duration
	minBytes int64
	cancel   context.CancelFunc
	timer    *time.Timer
	got      atomic.Int64 // bytes in the current window
	stalled  atomic.Bool
	trickled atomic.Bool // stalled with some data: too slow, not silent
}

func (s *stallReader) Read(p []byte) (int, error) {
	if s.timer == nil {
		s.timer = time.AfterFunc(s.timeout, s.check)
	}
	n, err := s.r.Read(p)
	s.got.Add(int64(n))
	if err != nil {
		s.timer.Stop()
	}
	return n, err
}

func (s *stallReader) check() {
	got := s.got.Swap(0)
	if got == 0 || got < s.minBytes {
		s.trickled.Store(got > 0)
		s.stalled.Store(true)
		s.cancel()
		return
	}
	s.timer.Reset(s.timeout)
}

// HasControl reports control characters in s (a file name taken from a
// URL, where %0A or %00 decode to them).
func HasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// sameVersion reports whether a resumed response is of the version the
// part holds: the same ETag, or without one the same Last-Modified.
func sameVersion(st partState, h http.Header) bool {
	if st.ETag != "" {
		return h.Get("ETag") == st.ETag
	}
	return st.LastModified != "" && h.Get("Last-Modified") == st.LastModified
}

func versionOf(h http.Header) string {
	switch {
	case h.Get("ETag") != "":
		return "ETag " + h.Get("ETag")
	case h.Get("Last-Modified") != "":
		return "Last-Modified " + h.Get("Last-Modified")
	}
	return "no ETag or Last-Modified"
}

// SumFromFile fetches a SHA256SUMS-style file and returns the digest listed
// for name. The token of o goes with it only when sumsURL has o.URL's
// origin.
func SumFromFile(ctx context.Context, o Options, sumsURL, name string) (string, error) {
	sum, err := sumFromFile(ctx, o, sumsURL, name)
	return sum, RedactErr(err)
}

func sumFromFile(ctx context.Context, o Options, sumsURL, name string) (string, error) {
	o.defaults()
	sumsURL = strings.TrimSpace(sumsURL)
	if err := checkURL(sumsURL); err != nil {
		return "", err
	}
	shown := Redact(sumsURL)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sumsURL, nil)
	if err != nil {
		return "", &Error{URL: shown, Kind: BadURL, Msg: err.Error()}
	}
	req.Header.Set("User-Agent", "llamaboot")
	if a, err := url.Parse(o.URL); err == nil && o.Token != "" && sameOrigin(a, req.URL) {
		req.Header.Set("Authorization", "Bearer "+o.Token)
	}
	resp, err := o.Client.Do(req)
	if errors.Is(err, errDowngrade) {
		return "", &Error{URL: shown, Kind: Insecure, Msg: "the server redirected from https to plain http; refused"}
	}
	if err != nil {
		return "", fmt.Errorf("fetch %s: %w", shown, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", &Error{URL: shown, Status: resp.StatusCode, Kind: HTTPStatus, Msg: "cannot read the checksum file"}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", shown, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && strings.TrimPrefix(f[1], "*") == name && len(f[0]) == 64 {
			return strings.ToLower(f[0]), nil
		}
	}
	return "", &Error{URL: shown, Kind: Checksum, Msg: fmt.Sprintf("lists no sha256 for %s", name)}
}

// Growth turns the size of a download another process holds the lock for
// into the progress a lock waiter watches (appfile.Lock): a value that
// changes only once the file has grown by what minRate (bytes per second;
// 0 the default, negative any growth) brings over a window of the lock
// timeout. A holder that makes its .part grow a byte now and then (a
// user's own lock and file in a dir it owns) would otherwise keep root
// waiting for ever, each byte starting the timeout again.
func Growth(size func() int64, minRate int64, window time.Duration) func() int64 {
	if minRate == 0 {
		minRate = DefaultMinRate
	}
	step := int64(1)
	if minRate > 0 {
		step = max(int64(window.Seconds()*float64(minRate)), 1)
	}
	return func() int64 {
		n := size()
		if n < 0 {
			return -1
		}
		return n / step
	}
}

// LockPath is the one lock file of a download to dest: hidden beside it,
// there only while a download of it runs (appfile.LockEphemeral).
func LockPath(dest string) string {
	return filepath.Join(filepath.Dir(dest), "."+filepath.Base(dest)+".llamaboot.lock")
}
