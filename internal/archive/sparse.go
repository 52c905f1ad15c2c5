package archive

import (
	"bytes"
	"errors"
	"io"
	"os"
)

// sparseBlock is the unit copySparse looks for zeros in.
const sparseBlock = 64 << 10

var zeroBlock [sparseBlock]byte

// errWritten is a copy that would write more than it may.
var errWritten = errors.New("over the bytes it may write")

// copySparse copies r to f, leaving each whole block of zeros as a hole (a
// seek past it) instead of writing it: a sparse tar member (10 KiB stored,
// 2 GiB long) is written sparse, not allocated in full. The length is set
// at the end, so a trailing hole counts. It returns the length copied and
// the bytes written (holes not counted), and stops with errWritten before
// writing more than budget.
func copySparse(f *os.File, r io.Reader, budget int64) (n, written int64, err error) {
	buf := make([]byte, sparseBlock)
	holes := false
	for {
		k, rerr := io.ReadFull(r, buf)
		if k == len(buf) && bytes.Equal(buf, zeroBlock[:]) {
			if _, serr := f.Seek(int64(k), io.SeekCurrent); serr != nil {
				return n, written, serr
			}
			holes = true
		} else if k > 0 {
			if written+int64(k) > budget {
				return n, written, errWritten
			}
			if _, werr := f.Write(buf[:k]); werr != nil {
				return n, written, werr
			}
			written += int64(k)
		}
		n += int64(k)
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return n, written, rerr
		}
	}
	if holes {
		if err := f.Truncate(n); err != nil {
			return n, written, err
		}
	}
	return n, written, nil
}
