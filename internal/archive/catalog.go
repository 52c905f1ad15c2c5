package archive

import (
	"archive/tar"
	"io"
	"path"
	"strings"
)

// Catalog records what an image holds outside the directory taken: each
// path's type, link target and the layer that last wrote it, with
// whiteouts applied, and the content of the loader's configuration
// (/etc/ld.so.conf and ld.so.conf.d), so that libraries the bundle needs
// can be found in the image as its own loader would find them.
type Catalog struct {
	Files map[string]CatalogEntry // by path from the image's root, without the leading slash
	Conf  map[string][]byte       // etc/ld.so.conf and etc/ld.so.conf.d/*.conf
}

// CatalogEntry is one path of the image.
type CatalogEntry struct {
	Layer int // index of the layer that wrote it, from 0
	Type  byte
	Link  string
	Size  int64
}

// maxConf bounds one loader configuration file kept in memory.
const maxConf = 64 << 10

// WithCatalog makes the layers record a Catalog as they are applied.
func (l *Layers) WithCatalog() *Catalog {
	l.cat = &Catalog{Files: map[string]CatalogEntry{}, Conf: map[string][]byte{}}
	return l.cat
}

func (c *Catalog) add(layer int, full string, h *tar.Header, r io.Reader) {
	c.Files[full] = CatalogEntry{Layer: layer, Type: h.Typeflag, Link: h.Linkname, Size: h.Size}
	if (full == "etc/ld.so.conf" || strings.HasPrefix(full, "etc/ld.so.conf.d/") && strings.HasSuffix(full, ".conf")) &&
		(h.Typeflag == tar.TypeReg) && h.Size <= maxConf {
		b, err := io.ReadAll(io.LimitReader(r, maxConf))
		if err == nil {
			c.Conf[full] = b
		}
	}
}

// remove applies a whiteout: target and what lies below it, from the
// layers before this one.
func (c *Catalog) remove(layer int, target string, below bool) {
	for p, e := range c.Files {
		if e.Layer >= layer {
			continue
		}
		if (!below && p == target) || strings.HasPrefix(p, target+"/") || target == "." {
			delete(c.Files, p)
			delete(c.Conf, p)
		}
	}
}

// Resolve follows symlinks inside the image (in the file's name and its
// directories, as the kernel would inside the image) to the regular file p
// leads to; false when it leads nowhere.
func (c *Catalog) Resolve(p string) (string, CatalogEntry, bool) {
	p = rootRel(p)
	for range maxLinkHops {
		if dir, base := path.Split(p); dir != "" {
			p = path.Join(c.resolveDir(strings.TrimSuffix(dir, "/")), base)
		}
		e, ok := c.Files[p]
		if !ok {
			return "", e, false
		}
		switch e.Type {
		case tar.TypeReg:
			return p, e, true
		case tar.TypeSymlink:
			p = c.follow(p, e.Link)
		default:
			return "", e, false
		}
	}
	return "", CatalogEntry{}, false
}

func rootRel(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

// follow is where the link at p with target t leads, from the image's root.
func (c *Catalog) follow(p, t string) string {
	if !strings.HasPrefix(t, "/") {
		t = path.Join(path.Dir(p), t)
	}
	return rootRel(t)
}

// resolveDir follows the symlinks among a directory path's components
// (lib -> usr/lib in merged-/usr images). A directory no entry names is
// taken as written: layers need not list every parent.
func (c *Catalog) resolveDir(dir string) string {
	cur := ""
	for _, part := range strings.Split(dir, "/") {
		next := path.Join(cur, part)
		for range maxLinkHops {
			e, ok := c.Files[next]
			if !ok || e.Type != tar.TypeSymlink {
				break
			}
			next = c.follow(next, e.Link)
		}
		cur = next
	}
	return cur
}
