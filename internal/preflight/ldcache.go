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

// The new-format header ("glibc-ld.so.cache1.1"), which glibc has written
// since 2.32 (alone) and before that after the old format.
const (
	cacheMagicNew   = "glibc-ld.so.cache1.1"
	cacheHeaderSize = 48 // magic+version(20) nlibs(4) len_strings(4) flags(1) pad(3) ext(4) unused(12)
	cacheEntrySize  = 24 // flags(4) key(4) value(4) osversion(4) hwcap(8)
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

var errCacheFormat = errors.New("not a glibc ld.so.cache (new format)")

func parseLDCache(b []byte) (ldCache, error) {
	start := bytes.Index(b, []byte(cacheMagicNew))
	if start < 0 || len(b)-start < cacheHeaderSize {
		return nil, errCacheFormat
	}
	h := b[start:]
	le := binary.LittleEndian
	nlibs := int(le.Uint32(h[20:24]))
	if nlibs < 0 || nlibs > (len(h)-cacheHeaderSize)/cacheEntrySize {
		return nil, errCacheFormat
	}
	str := func(off uint32) (string, bool) {
		// String offsets count from the new header's start.
		if int(off) >= len(h) {
			return "", false
		}
		end := bytes.IndexByte(h[off:], 0)
		if end < 0 {
			return "", false
		}
		return string(h[off : int(off)+end]), true
	}
	c := ldCache{}
	for i := range nlibs {
		e := h[cacheHeaderSize+i*cacheEntrySize:]
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
