// Package printer writes llamaboot's human-facing output: prefixed step
// lines, warnings, and progress (a bar on a terminal, a periodic percentage
// line in container logs).
package printer

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Printer prints lines with a fixed prefix such as "[llama-cpp-pkg]".
// It is safe for concurrent use.
type Printer struct {
	mu     sync.Mutex
	out    io.Writer
	errw   io.Writer
	prefix string
	quiet  bool
	// ProgressEvery is the interval between percentage lines when out is
	// not a terminal.
	ProgressEvery time.Duration
}

// New returns a printer writing steps to out and warnings/errors to errw.
func New(out, errw io.Writer, prefix string, quiet bool) *Printer {
	return &Printer{out: out, errw: errw, prefix: prefix, quiet: quiet, ProgressEvery: 5 * time.Second}
}

// Discard is a printer that prints nothing; tests and library callers use it.
func Discard() *Printer { return New(io.Discard, io.Discard, "", true) }

// Stepf prints one progress step unless quiet.
func (p *Printer) Stepf(format string, args ...any) {
	if p == nil || p.quiet {
		return
	}
	p.line(p.out, "", format, args...)
}

// Warnf prints a warning to the error stream, even when quiet.
func (p *Printer) Warnf(format string, args ...any) {
	if p == nil {
		return
	}
	p.line(p.errw, "WARNING: ", format, args...)
}

// Errorf prints an error to the error stream, even when quiet.
func (p *Printer) Errorf(format string, args ...any) {
	if p == nil {
		return
	}
	p.line(p.errw, "ERROR: ", format, args...)
}

func (p *Printer) line(w io.Writer, kind, format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	prefix := p.prefix
	if prefix != "" {
		prefix += " "
	}
	fmt.Fprintf(w, "%s%s%s\n", prefix, kind, fmt.Sprintf(format, args...))
}

// Progress tracks bytes of a long step. Call Add as bytes pass and Done at
// the end.
type Progress struct {
	p     *Printer
	label string
	total int64
	start time.Time

	mu   sync.Mutex
	done int64
	last time.Time
	bar  *progressbar.ProgressBar

	// For downloads: lines carry rate and ETA, counted from base (bytes
	// an earlier run already had).
	rate bool
	base int64
}

// Progress starts tracking a step of total bytes (0 if unknown).
func (p *Printer) Progress(label string, total int64) *Progress {
	pr := &Progress{p: p, label: label, total: total, start: time.Now(), last: time.Now()}
	if p == nil || p.quiet {
		return pr
	}
	if f, ok := p.out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		pr.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(f),
			progressbar.OptionSetDescription(p.prefix+" "+label),
			progressbar.OptionShowBytes(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
	}
	return pr
}

// Download tracks a download of total bytes (0 if unknown) of which base
// are already there (a resumed download). It always prints lines, never a
// bar, since several downloads may run at once, and its lines carry the
// rate and the time left: "label: 37% (1.2 GiB of 3.4 GiB, 45.0 MiB/s, 52s left)".
func (p *Printer) Download(label string, total, base int64) *Progress {
	return &Progress{p: p, label: label, total: total, start: time.Now(), last: time.Now(), rate: true, base: base, done: base}
}

// Write counts bytes, so a Progress can sit in an io.TeeReader or MultiWriter.
func (pr *Progress) Write(b []byte) (int, error) {
	pr.Add(len(b))
	return len(b), nil
}

// Add records n more bytes done.
func (pr *Progress) Add(n int) {
	if pr.p == nil || pr.p.quiet {
		return
	}
	if pr.bar != nil {
		_ = pr.bar.Add(n)
		return
	}
	pr.mu.Lock()
	pr.done += int64(n)
	now := time.Now()
	due := now.Sub(pr.last) >= pr.p.ProgressEvery
	if due {
		pr.last = now
	}
	done := pr.done
	pr.mu.Unlock()
	switch {
	case !due:
	case pr.rate:
		pr.p.Stepf("%s: %s", pr.label, pr.rateLine(done, now))
	case pr.total > 0:
		pr.p.Stepf("%s: %d%% (%s of %s)", pr.label, done*100/pr.total, Bytes(done), Bytes(pr.total))
	}
}

func (pr *Progress) rateLine(done int64, now time.Time) string {
	secs := now.Sub(pr.start).Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(done-pr.base) / secs
	}
	speed := Bytes(int64(rate)) + "/s"
	if pr.total <= 0 {
		return fmt.Sprintf("%s so far, %s", Bytes(done), speed)
	}
	left := "time left unknown"
	if rate > 0 {
		left = time.Duration(float64(pr.total-done)/rate*float64(time.Second)).Round(time.Second).String() + " left"
	}
	return fmt.Sprintf("%d%% (%s of %s, %s, %s)", done*100/pr.total, Bytes(done), Bytes(pr.total), speed, left)
}

// Done ends the bar (the caller prints its own summary line).
func (pr *Progress) Done() {
	if pr.bar != nil {
		_ = pr.bar.Finish()
	}
}

// Bytes formats a byte count for people.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
