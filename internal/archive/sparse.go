package archive

import (
	"bytes"
	"io"
	"os"
)

// sparseBlock is the unit copySparse looks for zeros in.
const sparseBlock = 64 << 10

var zeroBlock [sparseBlock]byte

// copySparse copies r to f, leaving each whole block of zeros as a hole (a
// seek past it) instead of writing it: a sparse tar member (10 KiB stored,
// 2 GiB long) is written sparse, not allocated in full. The length is set
// at the end, so a trailing hole counts.
func copySparse(f *os.File, r io.Reader) (int64, error) {
	buf := make([]byte, sparseBlock)
	var n int64
	holes := false
	for {
		k, err := io.ReadFull(r, buf)
		if k == len(buf) && bytes.Equal(buf, zeroBlock[:]) {
			if _, serr := f.Seek(int64(k), io.SeekCurrent); serr != nil {
				return n, serr
			}
			holes = true
		} else if k > 0 {
			if _, werr := f.Write(buf[:k]); werr != nil {
				return n, werr
			}
		}
		n += int64(k)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return n, err
		}
	}
	if holes {
		if err := f.Truncate(n); err != nil {
			return n, err
		}
	}
	return n, nil
}
