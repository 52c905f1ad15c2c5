// Package models fetches the model files a config names by URL before the
// servers that need them start: through package fetch (resumable .part
// files, retries, redaction, proxies and CAs, pins checked before the
// rename), every part of a split GGUF, each file once however many
// instances share it, several at a time with a bound. A small marker beside
// each file records URL, digest and stamps, so a second boot uses the file
// offline without contacting the server.
package models

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/llamaboot/llamaboot/internal/access"
	"github.com/llamaboot/llamaboot/internal/appfile"
	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/dirs"
	"github.com/llamaboot/llamaboot/internal/fetch"
	"github.com/llamaboot/llamaboot/internal/printer"
)

// Options say how to fetch.
type Options struct {
	// Token (AUTO_INFER_MODEL_TOKEN) is sent as a bearer token only to
	// the model hosts it is for: those in TokenHosts
	// (AUTO_INFER_MODEL_TOKEN_HOSTS, "host" or "host:port"), or, when none
	// are named, the one host every model URL is on (with several, to
	// none: it would hand one server's token to another). A model that
	// names a token_env gets that variable's token instead, and a Hugging
	// Face URL with no other token gets HF_TOKEN. Tokens go to the URL's
	// own scheme, host and port only, never after a redirect elsewhere.
	// Never printed.
	Token      string
	TokenHosts []string
	// Getenv reads token_env variables and HF_TOKEN (default os.Getenv).
	Getenv   func(string) string
	Refresh  bool          // ask the server whether a file changed (ETag / If-Modified-Since)
	Parallel int           // files downloaded at once (default 3)
	Download fetch.Options // retries, timeouts, size limit, client
	Printer  *printer.Printer
}

// Download states.
const (
	Queued      = "queued"
	Downloading = "downloading"
	Done        = "done"
	Failed      = "failed"
	Cancelled   = "cancelled" // no instance wants it any more (a reload removed them)
)

// Download is one file's state, as status shows it.
type Download struct {
	File      string   `json:"file"`
	URL       string   `json:"url"` // redacted
	Instances []string `json:"instances"`
	State     string   `json:"state"`
	DoneBytes int64    `json:"done_bytes"`
	Total     int64    `json:"total_bytes"` // -1 while unknown
	Rate      float64  `json:"rate_bytes_per_s"`
	ETA       float64  `json:"eta_s,omitempty"`
	Error     string   `json:"error,omitempty"`
}

// file is one file to have: a model, or one part of a split model.
type file struct {
	url, pin, path string
	tokenEnv       string // the model's token_env
	users          []string

	mu          sync.Mutex
	state       string
	done, total int64
	base        int64 // bytes already there when this run's download began
	started     time.Time
	err         error
	cancel      context.CancelFunc // ends this file's download; nil before it starts
}

// Fetcher fetches the models of a set of instances and reports progress.
type Fetcher struct {
	o     Options
	files []*file
	// need maps each instance to the files it waits for.
	need map[string][]*file
	// hosts are the host[:port]s of every file's URL.
	hosts []string
}

// New plans the files the instances need: every part of each model given
// by URL, each local path once.
func New(instances []config.Instance, o Options) *Fetcher {
	if o.Parallel <= 0 {
		o.Parallel = 3
	}
	f := &Fetcher{o: o, need: map[string][]*file{}}
	byPath := map[string]*file{}
	for _, in := range instances {
		src := in.ModelSource
		if src == nil {
			continue
		}
		for i := 1; i <= src.Parts; i++ {
			u, p := partName(src.URL, i, src.Parts), partName(src.Path, i, src.Parts)
			fl, ok := byPath[p]
			if !ok {
				fl = &file{url: u, path: p, tokenEnv: src.TokenEnv, state: Queued, total: -1}
				if i <= len(src.SHA256) {
					fl.pin = src.SHA256[i-1]
				}
				byPath[p] = fl
				f.files = append(f.files, fl)
			}
			fl.users = append(fl.users, in.Name)
			f.need[in.Name] = append(f.need[in.Name], fl)
		}
	}
	for _, fl := range f.files {
		if h := hostOf(fl.url); !slices.Contains(f.hosts, h) {
			f.hosts = append(f.hosts, h)
		}
	}
	if f.o.Getenv == nil {
		f.o.Getenv = os.Getenv
	}
	return f
}

// token is the bearer token for fl's URL, by the rules of Options.Token.
func (f *Fetcher) token(fl *file) string {
	if fl.tokenEnv != "" {
		return f.o.Getenv(fl.tokenEnv)
	}
	u, err := url.Parse(fl.url)
	if err != nil {
		return ""
	}
	if f.o.Token != "" && f.globalFor(u) {
		return f.o.Token
	}
	if HuggingFaceHost(u.Hostname()) {
		return f.o.Getenv("HF_TOKEN")
	}
	return ""
}

// globalFor reports whether AUTO_INFER_MODEL_TOKEN is for u's host.
func (f *Fetcher) globalFor(u *url.URL) bool {
	if len(f.o.TokenHosts) > 0 {
		return slices.ContainsFunc(f.o.TokenHosts, func(h string) bool {
			return strings.EqualFold(h, u.Host) || strings.EqualFold(h, u.Hostname())
		})
	}
	return len(f.hosts) == 1
}

// GlobalTokenUnused says why AUTO_INFER_MODEL_TOKEN goes nowhere ("" when
// it goes somewhere, or is not set): models on several hosts and none
// named for it.
func (f *Fetcher) GlobalTokenUnused() string {
	if f.o.Token == "" || len(f.o.TokenHosts) > 0 || len(f.hosts) <= 1 {
		return ""
	}
	return fmt.Sprintf("AUTO_INFER_MODEL_TOKEN is sent to no model host: the models come from %s; name the hosts it is for in AUTO_INFER_MODEL_TOKEN_HOSTS, or give each [models.NAME] a token_env",
		strings.Join(f.hosts, ", "))
}

func hostOf(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return strings.ToLower(u.Host)
	}
	return ""
}

// HuggingFaceHost reports a Hugging Face host, where HF_TOKEN (the Hugging
// Face convention) goes.
func HuggingFaceHost(h string) bool {
	h = strings.ToLower(h)
	for _, d := range []string{"huggingface.co", "hf.co"} {
		if h == d || strings.HasSuffix(h, "."+d) {
			return true
		}
	}
	return false
}

// Needs reports whether any instance has a model to fetch.
func (f *Fetcher) Needs() bool { return len(f.files) > 0 }

// Waiting reports whether the instance waits for a download.
func (f *Fetcher) Waiting(name string) bool { return len(f.need[name]) > 0 }

var firstPartRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`-00001-of-(\d{5})\.gguf$`) })

// partName is the name (URL or path) of part i of n, given the first part's.
func partName(first string, i, n int) string {
	if n <= 1 || i == 1 {
		return first
	}
	repl := fmt.Sprintf("-%05d-of-%05d.gguf", i, n)
	u, err := url.Parse(first)
	if err == nil && fetch.IsURL(first) {
		// The query (a signature) stays as given; only the file name changes.
		u.Path = firstPartRE().ReplaceAllString(u.Path, repl)
		u.RawPath = ""
		return u.String()
	}
	return firstPartRE().ReplaceAllString(first, repl)
}

// Status reports every file's state.
func (f *Fetcher) Status() []Download {
	out := make([]Download, 0, len(f.files))
	now := time.Now()
	for _, fl := range f.files {
		fl.mu.Lock()
		d := Download{File: fl.path, URL: fetch.Redact(fl.url), Instances: append([]string(nil), fl.users...),
			State: fl.state, DoneBytes: fl.done, Total: fl.total}
		if fl.state == Downloading {
			if secs := now.Sub(fl.started).Seconds(); secs > 0 {
				d.Rate = float64(fl.done-fl.base) / secs
			}
			if d.Rate > 0 && fl.total > 0 {
				d.ETA = float64(fl.total-fl.done) / d.Rate
			}
		}
		if fl.err != nil {
			d.Error = fl.err.Error()
		}
		fl.mu.Unlock()
		out = append(out, d)
	}
	return out
}

// Run fetches every file, at most Parallel at a time. As soon as all the
// files of an instance are there (or one failed) it calls ready with the
// instance's name and the failure, if any; instances without downloads are
// not reported. It returns the failures by instance.
func (f *Fetcher) Run(ctx context.Context, ready func(name string, err error)) map[string]error {
	if msg := f.GlobalTokenUnused(); msg != "" && f.o.Printer != nil {
		f.o.Printer.Warnf("%s", msg)
	}
	failed := map[string]error{}
	var mu sync.Mutex
	pending := map[string]int{}
	for name, files := range f.need {
		pending[name] = len(files)
	}
	// Workers take the files in config order.
	queue := make(chan *file, len(f.files))
	for _, fl := range f.files {
		queue <- fl
	}
	close(queue)
	var wg sync.WaitGroup
	for range min(f.o.Parallel, len(f.files)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for fl := range queue {
				fctx, cancel := context.WithCancel(ctx)
				fl.mu.Lock()
				fl.cancel, fl.users = cancel, slices.Clone(fl.users)
				unwanted := len(fl.users) == 0
				fl.mu.Unlock()
				switch {
				case unwanted:
					fl.finish(nil)
				case ctx.Err() != nil:
					fl.finish(fmt.Errorf("not downloaded: %w", context.Cause(ctx)))
				default:
					fl.finish(f.get(fctx, fl))
				}
				cancel()
				f.settle(fl, &mu, pending, failed, ready)
			}
		}()
	}
	wg.Wait()
	return failed
}

// settle records a finished file against its instances and reports those
// with nothing left to wait for.
func (f *Fetcher) settle(fl *file, mu *sync.Mutex, pending map[string]int, failed map[string]error, ready func(string, error)) {
	fl.mu.Lock()
	users, ferr := slices.Clone(fl.users), fl.err
	fl.mu.Unlock()
	mu.Lock()
	var done []string
	for _, name := range users {
		if ferr != nil && failed[name] == nil {
			failed[name] = modelError(fetch.Redact(fl.url), ferr)
		}
		if pending[name]--; pending[name] == 0 {
			done = append(done, name)
		}
	}
	errs := make([]error, len(done))
	for i, name := range done {
		errs[i] = failed[name]
	}
	mu.Unlock()
	for i, name := range done {
		if ready != nil {
			ready(name, errs[i])
		}
	}
}

// Drop stops waiting on name's behalf (a reload removed the instance, or
// starts it on a file already there): a file nobody waits for any more is
// not fetched, or its download is cancelled (the .part stays).
func (f *Fetcher) Drop(name string) {
	for _, fl := range f.need[name] {
		fl.mu.Lock()
		fl.users = slices.DeleteFunc(fl.users, func(u string) bool { return u == name })
		if len(fl.users) == 0 && fl.cancel != nil {
			fl.cancel()
		}
		fl.mu.Unlock()
	}
}

func (fl *file) finish(err error) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.err = err
	if len(fl.users) == 0 {
		fl.state, fl.err = Cancelled, nil
		return
	}
	if err != nil {
		fl.state = Failed
	} else {
		fl.state = Done
	}
}

func (fl *file) progress(done, total int64) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.state != Downloading {
		fl.state, fl.started, fl.base = Downloading, time.Now(), done
	}
	fl.done, fl.total = done, total
}

// get makes fl.path hold the file: from the marker alone when it vouches
// for it, else by download. Another process fetching the same file
// (fetch-models beside entry, replicas on one volume) is waited for, and
// what it left is checked again before downloading anything.
func (f *Fetcher) get(ctx context.Context, fl *file) error {
	if !f.o.Refresh {
		if ok, err := f.inPlace(fl, false); ok || err != nil {
			return err
		}
	}
	if err := dirs.MkdirAll(filepath.Dir(fl.path), 0o755); err != nil {
		return access.Explain(err, "AUTO_INFER_MODELS_DIR (default <app-dir>/models) or the model's path key")
	}
	shown := fetch.Redact(fl.url)
	waited := false
	lockWait := f.o.Download.LockTimeout
	if lockWait <= 0 {
		lockWait = 10 * time.Minute
	}
	unlock, err := appfile.LockEphemeral(ctx, fetch.LockPath(fl.path), lockWait, func(int) {
		waited = true
		f.o.Printer.Stepf("another process is fetching model %s; waiting for it", fl.path)
	}, fetch.Growth(func() int64 { return partSize(fl.path) }, f.o.Download.MinRate, lockWait))
	if err != nil {
		return fmt.Errorf("model %s: %w", fl.path, err)
	}
	defer unlock()
	if !f.o.Refresh || waited {
		if ok, err := f.inPlace(fl, true); ok || err != nil {
			return err
		}
	}
	seen, err := look(fl)
	if err != nil {
		return err
	}
	d := f.o.Download
	d.URL, d.Dest, d.SHA256, d.Token, d.Printer = fl.url, fl.path, fl.pin, f.token(fl), f.o.Printer
	d.Label, d.OnProgress = filepath.Base(fl.path), fl.progress
	d.DestLocked = true // held above: one lock file per model
	if seen.current && f.o.Refresh {
		d.Refresh, d.ETag, d.LastModified = true, seen.m.ETag, seen.m.LastModified
	}
	f.o.Printer.Stepf("downloading model %s to %s", shown, fl.path)
	start := time.Now()
	res, err := fetch.Fetch(ctx, d)
	if err != nil {
		return hints(err)
	}
	if res.NotModified {
		f.o.Printer.Stepf("model %s is unchanged on the server (HTTP 304)", fl.path)
		return nil
	}
	fi, err := regular(res.Path)
	if err != nil {
		return err
	}
	f.o.Printer.Stepf("downloaded model %s (%s in %.1fs, sha256 %s)", fl.path, printer.Bytes(res.Size), time.Since(start).Seconds(), res.SHA256)
	return writeMarker(fl.path, newMarker(fl.url, res.SHA256, fi, res.ETag, res.LastModified))
}

// inPlace reports whether fl.path already holds fl's file, as a boot would
// use it without a download: its marker vouches for it; or, without a
// marker, nothing says otherwise (a file baked into the image: no pin, or
// one it hashes to: checked only with hash, under the lock, as it reads
// the whole file).
func (f *Fetcher) inPlace(fl *file, hash bool) (bool, error) {
	p, shown := f.o.Printer, fetch.Redact(fl.url)
	seen, err := look(fl)
	switch {
	case err != nil || seen.fi == nil:
		return false, err
	case seen.current:
		p.Stepf("model %s is present (sha256 %s…, from %s); server not contacted", fl.path, short(seen.m.SHA256), shown)
		fl.progress(seen.fi.Size(), seen.fi.Size())
		return true, nil
	case fl.pin == "" && !seen.haveMarker:
		// Put there by someone else (baked into the image, copied by
		// hand): without a pin it is taken as it is.
		p.Stepf("model %s exists but was not downloaded by llamaboot; using it as it is (remove it to download %s, or pin it with sha256)", fl.path, shown)
		return true, nil
	case fl.pin != "" && hash:
		// A file from elsewhere, or from another URL: the pin decides.
		// Hashed through the same opener as look (no link, no FIFO, regular
		// only), and vouched for by the stamp of the very file hashed.
		if sum, fi, err := fetch.SumStat(fl.path); err == nil && sum == fl.pin {
			p.Stepf("model %s matches its pinned sha256; using it", fl.path)
			return true, writeMarker(fl.path, newMarker(fl.url, sum, fi, "", ""))
		}
		p.Stepf("model %s does not match its pinned sha256; downloading %s", fl.path, shown)
	}
	return false, nil
}

// found is what is at a model's path.
type found struct {
	fi         os.FileInfo // nil: nothing there
	m          marker
	haveMarker bool
	// current: the marker vouches for this very file (stamp) as the
	// download of this URL, with the digest pinned if there is a pin.
	current bool
}

// look examines fl.path and its marker without following links or
// blocking: anything there but a regular file is refused.
func look(fl *file) (found, error) {
	fi, err := regular(fl.path)
	if err != nil || fi == nil {
		return found{}, err
	}
	m, have, err := readMarker(fl.path)
	if err != nil {
		return found{}, err
	}
	current := have && m.URLSHA256 == urlSum(fl.url) && m.Stamp == stampOf(fi) && (fl.pin == "" || fl.pin == m.SHA256)
	return found{fi: fi, m: m, haveMarker: have, current: current}, nil
}

// regular stats path without following a link there or on the way to it
// (package dirs): nil when nothing is there, an error naming what is there
// when it is not a regular file.
func regular(path string) (os.FileInfo, error) {
	d, name, err := dirs.OpenParent(path, false, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer d.Close()
	f, err := d.OpenFile(name, os.O_RDONLY, 0)
	var nr *dirs.NotRegularError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	case errors.As(err, &nr):
		return nil, &notRegularError{path: path, mode: nr.Mode}
	case err != nil:
		return nil, err
	}
	defer f.Close()
	return f.Stat()
}

// partSize is the size of the download in progress to path (-1: none),
// which a process waiting for the lock watches grow.
func partSize(path string) int64 {
	if fi, err := regular(path + ".part"); err == nil && fi != nil {
		return fi.Size()
	}
	return -1
}

type notRegularError struct {
	path string
	mode fs.FileMode
}

func (e *notRegularError) Error() string {
	what := "not a regular file"
	switch t := e.mode.Type(); {
	case t&fs.ModeSymlink != 0:
		what = "a symbolic link (llamaboot does not follow links at model paths: put the file itself there, or give its real path)"
	case t&fs.ModeNamedPipe != 0:
		what = "a FIFO"
	case t&fs.ModeDir != 0:
		what = "a directory"
	}
	return fmt.Sprintf("%s is %s, not a model file; remove it", e.path, what)
}

// BadInput: the operator put something at a model path that must go.
func (e *notRegularError) BadInput() bool { return true }

// Check reports, without contacting any server, why src is not in place
// as a boot would use it without a download ("" when it is): every part
// there and vouched for by its marker for src's URL and pin, or (no marker,
// no pin) a file put there by hand. A reload starts nothing on less.
func Check(src *config.ModelSource) string {
	for i := 1; i <= src.Parts; i++ {
		fl := &file{url: partName(src.URL, i, src.Parts), path: partName(src.Path, i, src.Parts)}
		if i <= len(src.SHA256) {
			fl.pin = src.SHA256[i-1]
		}
		seen, err := look(fl)
		switch {
		case err != nil:
			return err.Error()
		case seen.fi == nil:
			return fmt.Sprintf("model %s is not downloaded yet to %s", fetch.Redact(fl.url), fl.path)
		case seen.current || fl.pin == "" && !seen.haveMarker:
			continue
		case seen.haveMarker && seen.m.URLSHA256 != urlSum(fl.url):
			return fmt.Sprintf("%s was downloaded from another URL than %s", fl.path, fetch.Redact(fl.url))
		case fl.pin != "" && (!seen.haveMarker || seen.m.SHA256 != fl.pin):
			return fmt.Sprintf("%s is not known to match the pinned sha256 %s…", fl.path, short(fl.pin))
		default:
			return fmt.Sprintf("%s changed since it was downloaded", fl.path)
		}
	}
	return ""
}

// hints adds to a download error what a model's user can change.
func hints(err error) error {
	err = fetch.AddHint(err, fetch.Unauthorized, "the token comes from the model's token_env, AUTO_INFER_MODEL_TOKEN (for the hosts in AUTO_INFER_MODEL_TOKEN_HOSTS, or the one host all models are on), or HF_TOKEN for Hugging Face URLs")
	err = fetch.AddHint(err, fetch.TooLarge, "raise --max-download")
	err = fetch.AddHint(err, fetch.Checksum, "fix sha256 / model_sha256 in the config, or the file on the server")
	return fetch.AddHint(err, fetch.NoSpace, "free space, or set AUTO_INFER_MODELS_DIR to a larger volume")
}

func short(sum string) string {
	if len(sum) > 12 {
		return sum[:12]
	}
	return sum
}

// BadInput reports whether any failure is the user's input at fault (a
// wrong URL, token or pin) rather than the network or the disk.
func BadInput(failed map[string]error) bool {
	for _, err := range failed {
		var bad interface{ BadInput() bool }
		if errors.As(err, &bad) && bad.BadInput() {
			return true
		}
	}
	return false
}

// Sorted returns the failed instance names in order.
func Sorted(failed map[string]error) []string {
	names := make([]string, 0, len(failed))
	for n := range failed {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// stamp identifies one version of a file cheaply.
type stamp struct {
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	Ino     uint64 `json:"ino"`
}

func stampOf(fi os.FileInfo) stamp {
	s := stamp{Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.Ino = st.Ino
	}
	return s
}

// marker sits beside each downloaded file as .<name>.llamaboot.json.
type marker struct {
	URL string `json:"url"` // redacted, for people
	// URLSHA256 is the SHA-256 of the whole URL, query included, which is
	// what is compared (a new ?v=2 is a new file); the URL itself may carry
	// secrets and is never stored.
	URLSHA256    string `json:"url_sha256"`
	SHA256       string `json:"sha256"`
	Stamp        stamp  `json:"stamp"`
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"last_modified,omitempty"`
	FetchedAt    int64  `json:"fetched_at_unix"`
}

// MarkerPath is where the marker of the model file at path lives.
func MarkerPath(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".llamaboot.json")
}

func newMarker(rawURL, sum string, fi os.FileInfo, etag, lastModified string) marker {
	return marker{URL: fetch.Redact(rawURL), URLSHA256: urlSum(rawURL), SHA256: sum, Stamp: stampOf(fi),
		ETag: etag, LastModified: lastModified, FetchedAt: time.Now().Unix()}
}

func urlSum(rawURL string) string {
	h := sha256.Sum256([]byte(rawURL))
	return hex.EncodeToString(h[:])
}

// readMarker reads a marker without following a link or blocking on a
// FIFO; an unreadable or garbled one is no marker, anything but a regular
// file there is an error.
func readMarker(path string) (marker, bool, error) {
	mp := MarkerPath(path)
	b, err := appfile.ReadFile(mp, 64<<10)
	var nr *dirs.NotRegularError
	var big *appfile.TooBigError
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.As(err, &big):
		return marker{}, false, nil
	case errors.As(err, &nr):
		return marker{}, false, &notRegularError{path: mp, mode: nr.Mode}
	case err != nil:
		return marker{}, false, fmt.Errorf("read %s: %w", mp, err)
	}
	var m marker
	if json.Unmarshal(b, &m) != nil {
		return marker{}, false, nil
	}
	return m, true, nil
}

func writeMarker(path string, m marker) error {
	b, _ := json.MarshalIndent(m, "", "  ")
	dst := MarkerPath(path)
	if err := appfile.Replace(dst, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	return nil
}

// Summary is one line per failed instance, for logs.
func Summary(failed map[string]error) string {
	var b strings.Builder
	for _, n := range Sorted(failed) {
		fmt.Fprintf(&b, "instance %s: %v\n", n, failed[n])
	}
	return b.String()
}

// modelError names the model's URL once: a download error that starts
// with it already does.
func modelError(shown string, err error) error {
	if strings.HasPrefix(err.Error(), shown) {
		return fmt.Errorf("model %w", err)
	}
	return fmt.Errorf("model %s: %w", shown, err)
}
