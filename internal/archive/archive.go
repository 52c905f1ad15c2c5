// Package archive extracts untrusted llama.cpp bundles (tar, gzip, zstd, xz,
// zip) into a directory without letting any entry write, link or resolve
// outside it.
package archive

import (
	"bytes"
	"fmt"
	"strings"
)

// Format is an archive container format, detected from content.
type Format int

// Formats llamaboot understands.
const (
	Unknown Format = iota
	Tar
	Gzip
	Zstd
	Xz
	Zip
	Bzip2 // recognised only to say it is unsupported
)

func (f Format) String() string {
	switch f {
	case Tar:
		return "tar"
	case Gzip:
		return "tar.gz"
	case Zstd:
		return "tar.zst"
	case Xz:
		return "tar.xz"
	case Zip:
		return "zip"
	case Bzip2:
		return "tar.bz2"
	}
	return "unknown"
}

// PeekSize is how many leading bytes Detect wants to see.
const PeekSize = 512

// Detect names the format of an archive from its first bytes.
func Detect(head []byte) Format {
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return Gzip
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return Zstd
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return Xz
	case bytes.HasPrefix(head, []byte("PK\x03\x04")), bytes.HasPrefix(head, []byte("PK\x05\x06")):
		return Zip
	case bytes.HasPrefix(head, []byte("BZh")):
		return Bzip2
	case isTarHeader(head):
		return Tar
	}
	return Unknown
}

// isTarHeader reports whether block looks like a tar header: the ustar magic,
// or (for old v7 archives) a valid header checksum.
func isTarHeader(block []byte) bool {
	if len(block) < 512 {
		return false
	}
	if bytes.Equal(block[257:262], []byte("ustar")) {
		return true
	}
	var sum int64
	for i, b := range block[:512] {
		if i >= 148 && i < 156 {
			b = ' '
		}
		sum += int64(b)
	}
	field := strings.Trim(string(block[148:156]), " \x00")
	var recorded int64
	if _, err := fmt.Sscanf(field, "%o", &recorded); err != nil {
		return false
	}
	return recorded == sum && block[0] != 0
}

// FormatFromName guesses the format a file name claims, so a mismatch with
// the content can be pointed out.
func FormatFromName(name string) Format {
	n := strings.ToLower(name)
	switch {
	case strings.HasSuffix(n, ".tar.gz"), strings.HasSuffix(n, ".tgz"):
		return Gzip
	case strings.HasSuffix(n, ".tar.zst"), strings.HasSuffix(n, ".tzst"):
		return Zstd
	case strings.HasSuffix(n, ".tar.xz"), strings.HasSuffix(n, ".txz"):
		return Xz
	case strings.HasSuffix(n, ".zip"):
		return Zip
	case strings.HasSuffix(n, ".tar"):
		return Tar
	case strings.HasSuffix(n, ".tar.bz2"), strings.HasSuffix(n, ".tbz2"):
		return Bzip2
	}
	return Unknown
}
