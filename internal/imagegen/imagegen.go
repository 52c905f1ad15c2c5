// Package imagegen builds container images holding llama.cpp-like bundles,
// and serves or saves them the ways llamaboot reads images: a registry on
// loopback, an OCI layout (directory or tar), a `docker save` archive.
// Tests and the benchmark use it; nothing in the product does.
package imagegen

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
)

// Layer is a layer held in memory: its blob as stored and its tar.
type Layer struct {
	Raw, Plain []byte
	Type       types.MediaType
}

// NewLayer writes entries as one layer, compressed as f (Tar, Gzip or Zstd).
func NewLayer(f archive.Format, entries []bundlegen.Entry) (*Layer, error) {
	var plain, raw bytes.Buffer
	if err := bundlegen.Write(&plain, archive.Tar, entries); err != nil {
		return nil, err
	}
	if err := bundlegen.Write(&raw, f, entries); err != nil {
		return nil, err
	}
	mt := types.OCIUncompressedLayer
	switch f {
	case archive.Gzip:
		mt = types.OCILayer
	case archive.Zstd:
		mt = types.OCILayerZStd
	}
	return &Layer{Raw: raw.Bytes(), Plain: plain.Bytes(), Type: mt}, nil
}

func hashOf(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

func (l *Layer) Digest() (v1.Hash, error)           { return hashOf(l.Raw), nil }
func (l *Layer) DiffID() (v1.Hash, error)           { return hashOf(l.Plain), nil }
func (l *Layer) Compressed() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(l.Raw)), nil }
func (l *Layer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.Plain)), nil
}
func (l *Layer) Size() (int64, error)                { return int64(len(l.Raw)), nil }
func (l *Layer) MediaType() (types.MediaType, error) { return l.Type, nil }

// Image stacks layers (lowest first) into an image for platform
// ("linux/amd64"), with labels in its config.
func Image(platform string, labels map[string]string, layers ...v1.Layer) (v1.Image, error) {
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	p, err := v1.ParsePlatform(platform)
	if err != nil {
		return nil, err
	}
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Config.Labels = labels
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	return mutate.MediaType(img, types.OCIManifestSchema1), nil
}

// Index puts images into an index, each under its config's platform.
func Index(imgs ...v1.Image) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: cf.Platform()}})
	}
	return idx, nil
}

// Registry serves an in-process registry on loopback. Close it when done.
func Registry() *httptest.Server {
	return httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
}

// Push writes an image or index to ref (host:port/repo:tag) of a loopback
// registry.
func Push(ref string, x any) error {
	r, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	switch v := x.(type) {
	case v1.ImageIndex:
		return remote.WriteIndex(r, v)
	default:
		return remote.Write(r, x.(v1.Image))
	}
}

// PushAuth is Push with basic credentials.
func PushAuth(ref string, img v1.Image, user, pass string) error {
	r, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	return remote.Write(r, img, remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: user, Password: pass})))
}

// WriteLayout writes img into an OCI image layout at dir, named refName
// (annotation org.opencontainers.image.ref.name) when not empty.
func WriteLayout(dir string, img v1.Image, refName string) error {
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	var opts []layout.Option
	if refName != "" {
		opts = append(opts, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": refName}))
	}
	return p.AppendImage(img, opts...)
}

// WriteDockerArchive writes img as `docker save` would, tagged tag.
func WriteDockerArchive(path, tag string, img v1.Image) error {
	t, err := name.NewTag(tag)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(path, t, img)
}

// WriteDockerArchiveOf writes several images into one `docker save`
// archive, each under its tag.
func WriteDockerArchiveOf(path string, imgs map[string]v1.Image) error {
	m := map[name.Tag]v1.Image{}
	for tag, img := range imgs {
		t, err := name.NewTag(tag)
		if err != nil {
			return err
		}
		m[t] = img
	}
	return tarball.MultiWriteToFile(path, m)
}

// TarDir writes the tree at dir as an uncompressed tar at path (an OCI
// layout becomes an oci-archive).
func TarDir(dir, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
