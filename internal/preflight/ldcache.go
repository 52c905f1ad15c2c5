package preflight

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
)

// ldCache is /etc/ld.so.cache as the dynamic loader reads it: soname to
// paths, in the cache's order, per architecture.
type ldCache map[string][]cacheEntry

type cacheEntry struct {
	path  string
	flags int32
}

// The formats glibc's ldconfig writes: the old one ("ld.so-1.7.0", libc5
// days), the new one ("glibc-ld.so.cache1.1", alone since glibc 2.32), and
// both in one file (the default before 2.32): the old header and entries,
// then the new header where the old string table starts. String offsets of
// both count from the new header's start when there is one, from the end
// of the old entries otherwise.
const (
	cacheMagicOld      = "ld.so-1.7.0"
	cacheHeaderSizeOld = 16 // magic(11) pad(1) nlibs(4)
	cacheEntrySizeOld  = 12 // flags(4) key(4) value(4)
	cacheMagicNew      = "glibc-ld.so.cache1.1"
	cacheHeaderSize    = 48 // magic+version(20) nlibs(4) len_strings(4) flags(1) pad(3) ext(4) unused(12)
	cacheEntrySize     = 24 // flags(4) key(4) value(4) osversion(4) hwcap(8)
	cacheAlignNew      = 8  // the new header follows the old entries at this alignment
)

// Entry flags: the type (libc6 ELF) and the architecture bits.
const (
	flagTypeMask   = 0x00ff
	flagELFLibc6   = 0x0003
	flagArchMask   = 0xff00
	flagX8664Lib64 = 0x0300
	flagAArch64    = 0x0a00
)

func readLDCache(path string) (ldCache, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseLDCache(b)
}

var errCacheFormat = errors.New("not a glibc ld.so.cache (old or new format)")

// parseLDCache reads a cache as the loader does: the new format when the
// file holds it (alone, or after the old one), else the old one.
func parseLDCache(b []byte) (ldCache, error) {
	le := binary.LittleEndian
	if bytes.HasPrefix(b, []byte(cacheMagicNew)) {
		return parseEntries(b, len(cacheMagicNew), cacheHeaderSize, cacheEntrySize, 0)
	}
	if !bytes.HasPrefix(b, []byte(cacheMagicOld)) || len(b) < cacheHeaderSizeOld {
		return nil, errCacheFormat
	}
	nlibs := uint64(le.Uint32(b[cacheHeaderSizeOld-4 : cacheHeaderSizeOld]))
	end := cacheHeaderSizeOld + nlibs*cacheEntrySizeOld
	if end > uint64(len(b)) {
		return nil, errCacheFormat
	}
	if next := (end + cacheAlignNew - 1) &^ (cacheAlignNew - 1); next <= uint64(len(b)) && bytes.HasPrefix(b[next:], []byte(cacheMagicNew)) {
		return parseEntries(b[next:], len(cacheMagicNew), cacheHeaderSize, cacheEntrySize, 0)
	}
	return parseEntries(b, cacheHeaderSizeOld-4, cacheHeaderSizeOld, cacheEntrySizeOld, int(end))
}

// parseEntries reads the entry table of a cache in h: the count at
// countAt, entries of size from first, strings at offsets from strBase.
func parseEntries(h []byte, countAt, first, size, strBase int) (ldCache, error) {
	le := binary.LittleEndian
	if len(h) < first {
		return nil, errCacheFormat
	}
	nlibs := uint64(le.Uint32(h[countAt : countAt+4]))
	if nlibs > uint64((len(h)-first)/size) {
		return nil, errCacheFormat
	}
	str := func(off uint32) (string, bool) {
		at := uint64(strBase) + uint64(off)
		if at >= uint64(len(h)) {
			return "", false
		}
		end := bytes.IndexByte(h[at:], 0)
		if end < 0 {
			return "", false
		}
		return string(h[at : at+uint64(end)]), true
	}
	c := ldCache{}
	for i := range int(nlibs) {
		e := h[first+i*size:]
		flags := int32(le.Uint32(e[0:4]))
		key, ok1 := str(le.Uint32(e[4:8]))
		val, ok2 := str(le.Uint32(e[8:12]))
		if !ok1 || !ok2 {
			return nil, errCacheFormat
		}
		c[key] = append(c[key], cacheEntry{path: val, flags: flags})
	}
	return c, nil
}

// lookup finds soname for an object of machine m, as ld.so does: the first
// libc6 entry of that architecture.
func (c ldCache) lookup(soname string, m elf.Machine) (string, bool) {
	want := -1
	switch m {
	case elf.EM_X86_64:
		want = flagX8664Lib64
	case elf.EM_AARCH64:
		want = flagAArch64
	}
	for _, e := range c[soname] {
		if e.flags&flagTypeMask != flagELFLibc6 {
			continue
		}
		if want >= 0 && int(e.flags&flagArchMask) != want {
			continue
		}
		return e.path, true
	}
	return "", false
}
