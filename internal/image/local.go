package image

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/llamaboot/llamaboot/internal/dirs"
)

// blobs opens the files of an OCI image layout (a directory, or a tar of
// one) and of a docker-archive by their names inside it.
type blobs interface {
	open(name string) (io.ReadCloser, int64, error)
}

// dirBlobs is an OCI layout directory.
type dirBlobs string

func (d dirBlobs) open(name string) (io.ReadCloser, int64, error) {
	// Reached as root reaches any path (no link another user owns
	// followed on the way), then nothing inside leads out of it.
	dir, err := dirs.Open(string(d))
	if err != nil {
		return nil, 0, err
	}
	defer dir.Close()
	root, err := dir.Root()
	if err != nil {
		return nil, 0, err
	}
	defer root.Close()
	// O_NONBLOCK: a FIFO planted for a blob would block root in open for
	// ever (SIGTERM cannot end an open); the regular-file check refuses it.
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s is not a regular file", name)
	}
	return f, fi.Size(), nil
}

// tarIndex is an uncompressed tar archive read in place: where each
// member's data lies, so it can be read without extracting anything.
type tarIndex struct {
	f       *os.File
	entries map[string]tarEntry
}

type tarEntry struct {
	off, size int64
	link      string // a symlink's target (old docker save links shared layers)
}

func indexTar(p string) (*tarIndex, error) {
	// Links followed only when root (or we) own them: a user's link at
	// the archive's name could lead root to a root-only image.
	f, err := dirs.OpenRegular(p)
	if err != nil {
		return nil, bad(fmt.Sprintf("image archive %s cannot be read", p), err)
	}
	ti := &tarIndex{f: f, entries: map[string]tarEntry{}}
	// tar.Reader reads headers block by block and seeks past data, so the
	// file's offset after Next is where the member's data starts.
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			f.Close()
			return nil, bad(fmt.Sprintf("image archive %s is not a tar archive (or is truncated)", p), err)
		}
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			f.Close()
			return nil, err
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		switch h.Typeflag {
		case tar.TypeReg:
			ti.entries[name] = tarEntry{off: off, size: h.Size}
		case tar.TypeSymlink:
			ti.entries[name] = tarEntry{link: path.Join(path.Dir(name), h.Linkname)}
		}
		if len(ti.entries) > 1_000_000 {
			f.Close()
			return nil, bad(fmt.Sprintf("image archive %s has more than a million members", p), nil)
		}
	}
	return ti, nil
}

func (t *tarIndex) open(name string) (io.ReadCloser, int64, error) {
	name = path.Clean(name)
	for range 8 {
		e, ok := t.entries[name]
		if !ok {
			return nil, 0, fmt.Errorf("%s: %w", name, fs.ErrNotExist)
		}
		if e.link == "" {
			return io.NopCloser(io.NewSectionReader(t.f, e.off, e.size)), e.size, nil
		}
		name = e.link
	}
	return nil, 0, fmt.Errorf("%s: too many levels of symbolic links", name)
}

func (t *tarIndex) Close() error { return t.f.Close() }

// readSmall reads a manifest, index or config: small JSON files, bounded so
// a hostile archive cannot make one fill memory.
func readSmall(b blobs, name string) ([]byte, error) {
	rc, _, err := b.open(name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxJSON+1))
	if err == nil && len(data) > maxJSON {
		err = fmt.Errorf("%s is larger than %d bytes; not a manifest or config", name, maxJSON)
	}
	return data, err
}

const maxJSON = 8 << 20

func blobName(h v1.Hash) string { return path.Join("blobs", h.Algorithm, h.Hex) }

// readBlob reads a small blob of a layout and checks it against its digest.
func readBlob(ref Ref, b blobs, h v1.Hash) ([]byte, error) {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 {
		return nil, bad(fmt.Sprintf("%s: digest %s is not a sha256 digest", ref, h), nil)
	}
	data, err := readSmall(b, blobName(h))
	if err != nil {
		return nil, bad(fmt.Sprintf("%s: blob %s cannot be read", ref, h), err)
	}
	if got := sha256Of(data); got != h {
		return nil, digestError(fmt.Sprintf("%s: blob", ref), h, got)
	}
	return data, nil
}

// openLayout resolves an OCI image layout: the image its index names (by
// ref name, or the only one, or this platform's), its manifest and config,
// each checked against its digest.
func openLayout(ref Ref, b blobs, o Options) (*Image, error) {
	data, err := readSmall(b, "index.json")
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, bad(fmt.Sprintf("%s is not an OCI image layout (no index.json); for `docker save` output use docker-archive:", ref), err)
		}
		return nil, bad(fmt.Sprintf("%s: index.json cannot be read", ref), err)
	}
	idx, err := v1.ParseIndexManifest(strings.NewReader(string(data)))
	if err != nil {
		return nil, bad(fmt.Sprintf("%s: index.json cannot be read", ref), err)
	}
	var top v1.Descriptor
	switch {
	case ref.Name != "":
		var names []string
		for _, d := range idx.Manifests {
			n := d.Annotations["org.opencontainers.image.ref.name"]
			if n == ref.Name || strings.HasSuffix(d.Annotations["io.containerd.image.name"], ":"+ref.Name) {
				top = d
			}
			if n != "" {
				names = append(names, n)
			}
		}
		if top.Digest.Hex == "" {
			return nil, bad(fmt.Sprintf("%s: the layout holds no image named %q; it names: %s", ref, ref.Name, listOr(names)), nil)
		}
	case len(idx.Manifests) == 1:
		top = idx.Manifests[0]
	default:
		if top, err = pick(ref, idx, o.Platform); err != nil {
			return nil, err
		}
	}
	im := &Image{Ref: ref, Digest: top.Digest}
	if n := top.Annotations["org.opencontainers.image.ref.name"]; n != "" {
		im.tag = tagOf(n)
	} else if n := top.Annotations["io.containerd.image.name"]; n != "" {
		im.tag = tagOf(n)
	}
	mf, err := readBlob(ref, b, top.Digest)
	if err != nil {
		return nil, err
	}
	if isIndex(top.MediaType, mf) {
		child, err := v1.ParseIndexManifest(strings.NewReader(string(mf)))
		if err != nil {
			return nil, bad(fmt.Sprintf("%s: the index cannot be read", ref), err)
		}
		d, err := pick(ref, child, o.Platform)
		if err != nil {
			return nil, err
		}
		if mf, err = readBlob(ref, b, d.Digest); err != nil {
			return nil, err
		}
		im.Manifest = d.Digest
	}
	m, err := parseManifest(ref, mf)
	if err != nil {
		return nil, err
	}
	cfg, err := readBlob(ref, b, m.Config.Digest)
	if err != nil {
		return nil, err
	}
	if im.Config, err = parseConfig(ref, cfg); err != nil {
		return nil, err
	}
	im.Platform = im.Config.Platform().String()
	for _, d := range m.Layers {
		name := blobName(d.Digest)
		im.layers = append(im.layers, layer{digest: d.Digest, size: d.Size, open: func() (io.ReadCloser, error) {
			rc, _, err := b.open(name)
			if err != nil {
				return nil, bad("the blob cannot be read from the layout", err)
			}
			return rc, nil
		}})
	}
	return im, nil
}

// dockerManifest is one image of a `docker save` archive's manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// openDockerArchive resolves a `docker save` archive: its manifest.json,
// the image chosen by repo:tag (or its only one), the config, whose digest
// (the image ID) pins it, and the layers, checked against the config's
// diff IDs as they are read.
func openDockerArchive(ref Ref, o Options) (*Image, error) {
	ti, err := indexTar(ref.Path)
	if err != nil {
		return nil, err
	}
	im, err := dockerArchiveImage(ref, ti)
	if err != nil {
		ti.Close()
		return nil, err
	}
	im.closer = ti
	return im, nil
}

func dockerArchiveImage(ref Ref, ti *tarIndex) (*Image, error) {
	data, err := readSmall(ti, "manifest.json")
	if err != nil {
		return nil, bad(fmt.Sprintf("%s is not a `docker save` archive (no manifest.json); for an OCI layout use oci-archive:", ref), err)
	}
	var ms []dockerManifest
	if err := json.Unmarshal(data, &ms); err != nil {
		return nil, bad(fmt.Sprintf("%s: manifest.json cannot be read", ref), err)
	}
	var tags []string
	var chosen *dockerManifest
	var chosenTag string
	for i, m := range ms {
		tags = append(tags, m.RepoTags...)
		for _, t := range m.RepoTags {
			if ref.Name != "" && (t == ref.Name || strings.HasSuffix(t, "/"+ref.Name)) {
				chosen, chosenTag = &ms[i], t
			}
		}
	}
	switch {
	case chosen != nil:
	case ref.Name == "" && len(ms) == 1:
		chosen = &ms[0]
		if len(chosen.RepoTags) == 1 {
			chosenTag = chosen.RepoTags[0]
		}
	case ref.Name == "":
		return nil, bad(fmt.Sprintf("%s holds %d images; name one: %s:REPO:TAG with one of %s", ref, len(ms), ref, listOr(tags)), nil)
	default:
		return nil, bad(fmt.Sprintf("%s holds no image tagged %q; it holds: %s", ref, ref.Name, listOr(tags)), nil)
	}
	cfg, err := readSmall(ti, chosen.Config)
	if err != nil {
		return nil, bad(fmt.Sprintf("%s: config %s cannot be read", ref, chosen.Config), err)
	}
	im := &Image{Ref: ref, Digest: sha256Of(cfg)}
	if chosenTag != "" {
		im.tag = tagOf(chosenTag)
	}
	if im.Config, err = parseConfig(ref, cfg); err != nil {
		return nil, err
	}
	im.Platform = im.Config.Platform().String()
	diffs := im.Config.RootFS.DiffIDs
	if len(diffs) != len(chosen.Layers) {
		return nil, bad(fmt.Sprintf("%s: manifest.json lists %d layers but the config %d", ref, len(chosen.Layers), len(diffs)), nil)
	}
	for i, name := range chosen.Layers {
		ly := layer{diffID: diffs[i], open: func() (io.ReadCloser, error) {
			rc, _, err := ti.open(name)
			if err != nil {
				return nil, bad(fmt.Sprintf("layer %s cannot be read from the archive", name), err)
			}
			return rc, nil
		}}
		// Newer docker saves layers content-addressed: the name is the digest.
		if h, err := v1.NewHash(strings.Replace(strings.TrimPrefix(path.Clean(name), "blobs/"), "/", ":", 1)); err == nil {
			ly.digest = h
		}
		if _, size, err := ti.open(name); err == nil {
			ly.size = size
		}
		im.layers = append(im.layers, ly)
	}
	return im, nil
}

func listOr(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// stampFile is the file whose stamp tells a local image changed: the
// archive itself, or a layout's index.json.
func stampFile(ref Ref) string {
	if ref.Transport == OCI {
		return filepath.Join(ref.Path, "index.json")
	}
	return ref.Path
}

// StampFile is the file whose size, mtime and inode stand for a local
// image: when it is unchanged, so is the image.
func (r Ref) StampFile() string { return stampFile(r) }
