package logfile

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"

	"github.com/llamaboot/llamaboot/internal/dirs"
)

// errNotOurs is a log name holding something llamaboot did not write there.
var errNotOurs = errors.New("not a regular file")

// Tail returns up to n of the last lines written to path, reading back
// through its rotated files (path.1, path.2, ...) as far as needed, oldest
// line first. Lines keep their trailing newline. It stops at the first
// rotated name that is missing or not a regular file: a FIFO, link or dir
// planted at a rotated name in a shared log dir is never opened through.
func Tail(path string, n int) ([][]byte, error) {
	if n <= 0 {
		return nil, nil
	}
	var lines [][]byte // newest first while collecting
	for i := 0; len(lines) < n; i++ {
		got, err := tailFile(Rotated(path, i), n-len(lines))
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNotOurs) {
			if i == 0 {
				continue // the live file may be between rotations
			}
			break
		}
		if err != nil {
			return nil, err
		}
		lines = append(lines, got...)
	}
	for i, j := 0, len(lines)-1; i < j; i, j = i+1, j-1 {
		lines[i], lines[j] = lines[j], lines[i]
	}
	return lines, nil
}

// maxTailRead bounds what one tail reads of a file.
const maxTailRead = 4 << 20

// tailFile reads f backwards in chunks until it has n lines, newest first.
// A last line without a newline (output still being written) counts.
func tailFile(path string, n int) ([][]byte, error) {
	// Reached through package dirs: neither a link at the name nor one
	// another user owns on the way to it is followed, and a FIFO is not
	// waited on.
	d, name, err := dirs.OpenParent(path, false, 0)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	f, err := d.OpenFile(name, os.O_RDONLY, 0)
	var nr *dirs.NotRegularError
	if errors.As(err, &nr) {
		return nil, errNotOurs
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	const chunk = 64 << 10
	var (
		lines [][]byte
		rest  []byte // the start of a line whose beginning is in an earlier chunk
		off   = fi.Size()
	)
	// A file of one endless line (or a huge file planted at the name)
	// is read back no further than maxTailRead.
	for off > 0 && len(lines) < n && fi.Size()-off < maxTailRead {
		size := int64(chunk)
		if off < size {
			size = off
		}
		off -= size
		buf := make([]byte, size, int(size)+len(rest))
		if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
			return nil, err
		}
		buf = append(buf, rest...)
		for len(lines) < n {
			// The last newline of buf ends the line before the one at its end.
			end := len(buf)
			if end > 0 && buf[end-1] == '\n' {
				end--
			}
			i := bytes.LastIndexByte(buf[:end], '\n')
			if i < 0 {
				break
			}
			lines = append(lines, bytes.Clone(buf[i+1:]))
			buf = buf[:i+1]
		}
		rest = buf
	}
	if off == 0 && len(lines) < n && len(rest) > 0 {
		lines = append(lines, bytes.Clone(rest))
	}
	return lines, nil
}
