package cli

import "github.com/llamaboot/llamaboot/internal/bytesize"

// sizeFlag is a byte count given as 68719476736, 64GiB, 64G, 500MB or
// 1.5TiB (see bytesize). Its default shows as 64GiB.
type sizeFlag int64

func (f *sizeFlag) Set(s string) error {
	n, err := bytesize.Parse(s)
	if err != nil {
		return err
	}
	*f = sizeFlag(n)
	return nil
}

func (f *sizeFlag) Type() string { return "size" }

func (f *sizeFlag) String() string { return bytesize.Format(int64(*f)) }
