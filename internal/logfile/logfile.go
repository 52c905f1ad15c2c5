// Package logfile owns instance log files on disk: opening them safely as
// root, rotating them by size as llamaboot copies a server's output into
// them (the server is never signalled), and reading their last lines back
// across rotations.
package logfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/llamaboot/llamaboot/internal/dirs"
)

// Defaults for the log_max_size and log_max_files control keys.
const (
	DefaultMaxSize  = 100 << 20
	DefaultMaxFiles = 3
)

// Open opens path for appending, creating its missing parent dirs (0755):
// log paths such as /tmp/llama-server-<name>.log are predictable, and a
// link planted there, or on the way there, by another user must not make
// root append server output to a file of that user's choosing. So the
// directory is reached through package dirs (no link another user owns is
// followed) and the file is opened in it without following a link, only
// if it is a regular file with no other hard links. A new file is 0644
// whatever the umask.
//
// O_NONBLOCK keeps a FIFO planted at path from hanging the open (it is then
// refused as not a regular file); on a regular file it changes nothing.
func Open(path string) (*os.File, error) {
	d, name, err := dirs.OpenParent(path, true, 0o755)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	defer d.Close()
	f, err := d.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	var nr *dirs.NotRegularError
	switch {
	case errors.As(err, &nr) && nr.Mode&fs.ModeSymlink != 0:
		return nil, &LinkError{Path: path}
	case errors.As(err, &nr):
		return nil, notRegular(path, nr.Mode)
	case err != nil:
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	return f, nil
}

func notRegular(path string, m fs.FileMode) error {
	return fmt.Errorf("log file %s is not a regular file (%s); remove it or set log_file to a regular file", path, m.Type())
}

// LinkError is a log path that is a symbolic link. It is the user's input
// (or an attacker's plant) at fault.
type LinkError struct{ Path string }

func (e *LinkError) Error() string {
	return fmt.Sprintf("log file %s is a symbolic link; llamaboot does not write through links there (another user may have planted it): remove it or set log_file to a path you own", e.Path)
}

// BadInput marks the error as the configuration's fault (exit status 2).
func (e *LinkError) BadInput() bool { return true }

// Writer appends to a log file and rotates it when the next write would take
// it past MaxSize: path.1 .. path.<MaxFiles-1> hold older output, the oldest
// dropped. Writes that fail (a full disk) are counted in lines and bytes,
// not retried, so the copy from the server's pipe never stalls; a line cut
// by the failure is taken back out of the file, and once writing works
// again a note on a line of its own says what was lost.
type Writer struct {
	path     string
	maxSize  int64
	maxFiles int

	mu   sync.Mutex
	f    *os.File
	buf  []byte // whole lines not yet in f; flushed by Flush, when full and before rotating
	size int64  // of the file, buffered output included

	lost Loss // in all
	gap  Loss // since the last write that worked: said in the file once writing works again
	// onLoss hears when losing starts (gap.Err set) and when it stops.
	onLoss func(LossReport)
}

// bufSize is how much output waits for a flush.
const bufSize = 64 << 10

// Loss counts output that never reached the file.
type Loss struct {
	Lines, Bytes int64
	Err          error // the first failure of a gap
}

// LossReport says that a log started losing output (Resumed false: Err
// says why) or stopped (Resumed true: Lines and Bytes were lost meanwhile).
type LossReport struct {
	Path    string
	Resumed bool
	Loss
}

func (r LossReport) Error() string {
	if r.Resumed {
		return fmt.Sprintf("writing its log %s works again; %s of output were lost", r.Path, r.Loss)
	}
	return fmt.Sprintf("writing its log %s failed (%v): its output is lost until writing works again", r.Path, r.Err)
}

func (l Loss) String() string {
	return fmt.Sprintf("%d lines (%d bytes)", l.Lines, l.Bytes)
}

// NewWriter opens path through Open. maxSize <= 0 disables rotation;
// maxFiles counts the live file too (so 1 keeps no history).
func NewWriter(path string, maxSize int64, maxFiles int) (*Writer, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if maxFiles < 1 {
		maxFiles = 1
	}
	return &Writer{path: path, maxSize: maxSize, maxFiles: maxFiles, f: f, buf: make([]byte, 0, bufSize), size: fi.Size()}, nil
}

// OnLoss sets what hears when writing starts and stops losing output.
func (w *Writer) OnLoss(f func(LossReport)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.onLoss = f
}

// Write appends p, one whole line or more; it rotates first if p would not
// fit. Output is buffered until Flush. It never returns an error: a failed
// write is counted (see Lost).
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		// A rotation could not reopen the file; try again now.
		f, err := Open(w.path)
		if err != nil {
			w.lose(p, err)
			return len(p), nil
		}
		w.f, w.size = f, 0
	}
	if w.maxSize > 0 && w.size > 0 && w.size+int64(len(p)) > w.maxSize {
		if err := w.rotate(); err != nil {
			w.lose(p, err)
			return len(p), nil
		}
	}
	if len(w.buf)+len(p) > bufSize {
		w.flush()
	}
	w.buf = append(w.buf, p...)
	w.size += int64(len(p))
	return len(p), nil
}

// SetLimits changes the rotation bounds from the next write on (a reload
// that changed log_max_size or log_max_files).
func (w *Writer) SetLimits(maxSize int64, maxFiles int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.maxSize, w.maxFiles = maxSize, max(maxFiles, 1)
}

// Flush writes buffered output to the file. A failure (a full disk) loses
// the buffer and is counted, so the next write starts clean.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flush()
}

func (w *Writer) flush() error {
	if w.f == nil || len(w.buf) == 0 {
		return nil
	}
	defer func() { w.buf = w.buf[:0] }()
	if w.gap.Lines > 0 || w.gap.Bytes > 0 {
		// Say the gap before the next lines, on a line of its own.
		note := fmt.Sprintf("[llamaboot] %s of output were lost here (%v)\n", w.gap, w.gap.Err)
		kept, err := w.writeLines([]byte(note))
		w.size += int64(kept)
		if err != nil {
			w.size -= int64(len(w.buf))
			w.lose(w.buf, err)
			return err
		}
		r := LossReport{Path: w.path, Resumed: true, Loss: w.gap}
		w.gap = Loss{}
		if w.onLoss != nil {
			w.onLoss(r)
		}
	}
	kept, err := w.writeLines(w.buf)
	if err != nil {
		w.size -= int64(len(w.buf) - kept)
		w.lose(w.buf[kept:], err)
	}
	return err
}

// writeLines writes b, whole lines, to the file. After a failure the file
// still ends at the end of a line: a line cut by it is truncated away. It
// returns how many bytes of b stayed in the file.
func (w *Writer) writeLines(b []byte) (int, error) {
	n, err := w.f.Write(b)
	if err == nil {
		return n, nil
	}
	keep := bytes.LastIndexByte(b[:n], '\n') + 1
	if keep < n {
		if fi, serr := w.f.Stat(); serr == nil {
			_ = w.f.Truncate(fi.Size() - int64(n-keep))
		}
	}
	return keep, err
}

// lose counts b as lost; w.mu is held.
func (w *Writer) lose(b []byte, err error) {
	if len(b) == 0 {
		return
	}
	lines := int64(bytes.Count(b, []byte{'\n'}))
	if b[len(b)-1] != '\n' {
		lines++
	}
	starting := w.gap.Lines == 0 && w.gap.Bytes == 0
	if starting {
		w.gap.Err = err
	}
	w.gap.Lines += lines
	w.gap.Bytes += int64(len(b))
	w.lost.Lines += lines
	w.lost.Bytes += int64(len(b))
	if starting && w.onLoss != nil {
		w.onLoss(LossReport{Path: w.path, Loss: Loss{Err: err}})
	}
}

// Lost reports the output lost to a full or unwritable disk since the
// writer was opened.
func (w *Writer) Lost() Loss {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Loss{Lines: w.lost.Lines, Bytes: w.lost.Bytes}
}

// rotate shifts path -> path.1 -> path.2 ... and opens a fresh path.
// Renames do not follow links, and the fresh file is opened through Open.
// If the shift cannot be done (something planted at a rotated name that
// cannot be cleared), the live file is truncated instead, with a note, so
// log_max_size still bounds the disk used.
func (w *Writer) rotate() error {
	w.flush()
	if err := w.f.Close(); err != nil {
		w.f = nil
		return err
	}
	w.f = nil
	var shiftErr error
	if w.maxFiles == 1 {
		if err := removeLive(w.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			shiftErr = err
		}
	} else {
		for i := w.maxFiles - 1; i >= 1 && shiftErr == nil; i-- {
			shiftErr = shift(Rotated(w.path, i-1), Rotated(w.path, i))
		}
	}
	f, err := Open(w.path)
	if err != nil {
		return err
	}
	w.f, w.size = f, 0
	if shiftErr != nil {
		if err := f.Truncate(0); err != nil {
			return err
		}
		w.buf = fmt.Appendf(w.buf, "[llamaboot] could not rotate %s (%v); truncated it to stay within log_max_size\n", w.path, shiftErr)
		w.size = int64(len(w.buf))
	}
	return nil
}

// shift renames from to to. Something other than a regular file at to (a
// dir or FIFO planted in a shared log dir) is not ours to keep: it is
// removed, without following links, and the rename tried again.
func shift(from, to string) error {
	d, err := dirs.Open(filepath.Dir(from))
	if err != nil {
		return err
	}
	defer d.Close()
	from, to = filepath.Base(from), filepath.Base(to)
	err = d.Rename(from, to)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if m, _, lerr := d.Lstat(to); lerr == nil && !m.IsRegular() {
		if rerr := d.RemoveAll(to); rerr == nil {
			return d.Rename(from, to)
		}
	}
	return err
}

func removeLive(path string) error {
	d, name, err := dirs.OpenParent(path, false, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Remove(name)
}

// Close closes the current file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	ferr := w.flush()
	err := w.f.Close()
	w.f = nil
	if ferr != nil {
		return ferr
	}
	return err
}

// Rotated names the i-th older file of path (0 is path itself).
func Rotated(path string, i int) string {
	if i == 0 {
		return path
	}
	return path + "." + strconv.Itoa(i)
}
