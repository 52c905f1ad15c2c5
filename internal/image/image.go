package image

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/fetch"
	"github.com/llamaboot/llamaboot/internal/preflight"
	"github.com/llamaboot/llamaboot/internal/printer"
)

// VersionLabel is the image label that names the build.
const VersionLabel = "org.opencontainers.image.version"

// DefaultPath is where the official llama.cpp images keep llama-server and
// its libraries.
const DefaultPath = "/app"

// Options say how to read an image.
type Options struct {
	Platform v1.Platform // default: linux and this machine's architecture
	// Auth is USER:PASSWORD (or a bare registry token) for the image's
	// registry, from AUTO_INFER_REGISTRY_AUTH. Empty: the Docker config.json
	// ($DOCKER_CONFIG or ~/.docker), else anonymous (bearer tokens as
	// ghcr.io hands out are fetched either way).
	Auth     string
	CacheDir string // registry blobs are kept as CacheDir/sha256/<hex>
	// Known is the digest a tag resolved to when it was installed: with
	// its manifests in the cache and no Refresh, the registry is not asked.
	Known   string
	Refresh bool
	// Download carries retries, timeouts and the size limit for blobs.
	Download  fetch.Options
	Transport http.RoundTripper // default: fetch.NewClient's
	Jobs      int               // blobs downloaded at once (default 3)
	Printer   *printer.Printer
}

func (o *Options) defaults() {
	if o.Platform.OS == "" {
		o.Platform = v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	}
	if o.Jobs <= 0 {
		o.Jobs = 3
	}
	if o.Printer == nil {
		o.Printer = printer.Discard()
	}
}

// Image is a resolved image: its manifest for this platform, its config
// and its layers, ready to be applied.
type Image struct {
	Ref Ref
	// Digest pins the image: the digest of the manifest (or index) the
	// reference names; for a docker-archive, the image ID (its config's).
	Digest   v1.Hash
	Manifest v1.Hash // the platform's own manifest, when Digest is an index
	Platform string
	Config   *v1.ConfigFile
	// Offline: resolved from the cache without asking the registry.
	Offline bool
	// tag is the tag a local image carries inside its archive or layout
	// (docker save's RepoTags, an OCI ref.name annotation), "" without one.
	tag    string
	layers []layer
	closer io.Closer
	blobs  []v1.Hash // registry blobs it is made of: manifests, config, layers
}

// Blobs lists the registry blobs the image is made of (none for a local
// image): what the blob cache must keep for it.
func (im *Image) Blobs() []v1.Hash { return im.blobs }

// layer is one layer to apply: its raw (usually compressed) stream must
// hash to digest, or its uncompressed stream to diffID when the transport
// records only that (docker-archive).
type layer struct {
	digest v1.Hash
	diffID v1.Hash
	size   int64
	open   func() (io.ReadCloser, error)
	fetch  func(ctx context.Context) error // nil when the blob is at hand
}

// Version is the image's version label, or "" without one.
func (im *Image) Version() string {
	if im.Config == nil {
		return ""
	}
	return im.Config.Config.Labels[VersionLabel]
}

// Tag is the tag the image is known by: the one its registry reference
// names, else the one a local archive or layout records for it (the tag
// named in the reference, else its only one); "" without one. The build
// name is read from it when the image has no version label.
func (im *Image) Tag() string {
	if t := im.Ref.Tag(); t != "" {
		return t
	}
	return im.tag
}

// tagOf is the tag part of a reference such as host:5000/repo:tag (the
// whole string when it names no repository: an OCI ref.name may be a
// bare tag).
func tagOf(name string) string {
	if i := strings.LastIndexByte(name, ':'); i >= 0 && !strings.Contains(name[i:], "/") {
		return name[i+1:]
	}
	return name
}

// Layers is how many layers the image has.
func (im *Image) Layers() int { return len(im.layers) }

// Close releases the archive an image was read from.
func (im *Image) Close() error {
	if im.closer != nil {
		return im.closer.Close()
	}
	return nil
}

// Open resolves ref to the image for this platform. Nothing is
// downloaded but manifests and the config.
func Open(ctx context.Context, ref Ref, o Options) (*Image, error) {
	o.defaults()
	switch ref.Transport {
	case Docker:
		return openRemote(ctx, ref, o)
	case OCI:
		return openLayout(ref, dirBlobs(ref.Path), o)
	case OCIArchive:
		ti, err := indexTar(ref.Path)
		if err != nil {
			return nil, err
		}
		im, err := openLayout(ref, ti, o)
		if err != nil {
			ti.Close()
			return nil, err
		}
		im.closer = ti
		return im, nil
	case DockerArchive:
		return openDockerArchive(ref, o)
	}
	return nil, bad(fmt.Sprintf("unknown transport %q; llamaboot installs from %s", ref.Transport, Accepted), nil)
}

// pick chooses the manifest for want from an index, or says which
// platforms the index holds.
func pick(ref Ref, idx *v1.IndexManifest, want v1.Platform) (v1.Descriptor, error) {
	var names []string
	var match []v1.Descriptor
	for _, d := range idx.Manifests {
		if d.Platform == nil {
			continue
		}
		p := *d.Platform
		if p.OS == "unknown" { // attestations and signatures, not images
			continue
		}
		names = append(names, p.String())
		if p.OS == want.OS && p.Architecture == want.Architecture && (want.Variant == "" || p.Variant == want.Variant) {
			match = append(match, d)
		}
	}
	if len(match) > 0 {
		return match[0], nil
	}
	if len(names) == 0 && len(idx.Manifests) == 1 {
		return idx.Manifests[0], nil // an index of one, with no platform said
	}
	sort.Strings(names)
	held := "none"
	if len(names) > 0 {
		held = strings.Join(names, ", ")
	}
	return v1.Descriptor{}, bad(fmt.Sprintf("%s has no image for %s; it holds: %s", ref, want.String(), held), nil)
}

// parseManifest reads an image manifest and checks it is one llamaboot
// can apply.
func parseManifest(ref Ref, b []byte) (*v1.Manifest, error) {
	m, err := v1.ParseManifest(bytes.NewReader(b))
	if err != nil {
		return nil, bad(fmt.Sprintf("%s: the manifest cannot be read", ref), err)
	}
	if m.MediaType != "" && !m.MediaType.IsImage() {
		return nil, bad(fmt.Sprintf("%s: the manifest is a %s, not an image", ref, m.MediaType), nil)
	}
	return m, nil
}

func parseConfig(ref Ref, b []byte) (*v1.ConfigFile, error) {
	c, err := v1.ParseConfigFile(bytes.NewReader(b))
	if err != nil {
		return nil, bad(fmt.Sprintf("%s: the image config cannot be read", ref), err)
	}
	return c, nil
}

// isIndex tells an index from a manifest by media type, or by content when
// the media type is not said.
func isIndex(mt types.MediaType, b []byte) bool {
	if mt != "" {
		return mt.IsIndex()
	}
	var probe struct {
		MediaType types.MediaType `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
	}
	if json.Unmarshal(b, &probe) != nil {
		return false
	}
	return probe.MediaType.IsIndex() || len(probe.Manifests) > 0
}

func sha256Of(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// ExtractOptions say what to take from an image.
type ExtractOptions struct {
	Path   string // the image's llama.cpp directory, such as /app
	Limits archive.Limits
	Jobs   int // blobs downloaded at once
	// WithLibs also copies, from the image's own layers, the shared
	// libraries the bundle needs and System's loader cannot find.
	WithLibs bool
	System   preflight.System
}

// Extracted is what Extract wrote.
type Extracted struct {
	archive.Stats
	Libs []Lib // copied with WithLibs
}

// Extract applies the image's layers, lowest first, into root (the
// directory dir), taking o.Path. Registry blobs are fetched Jobs at a time
// while earlier layers are applied; every blob is verified against its
// digest as it streams. An error leaves root half-filled: the caller
// discards it.
func (im *Image) Extract(ctx context.Context, root *os.Root, dir string, o ExtractOptions) (Extracted, error) {
	imagePath, lim, jobs := o.Path, o.Limits, o.Jobs
	l, err := archive.NewLayers(root, imagePath, lim)
	if err != nil {
		return Extracted{}, err
	}
	var cat *archive.Catalog
	if o.WithLibs {
		cat = l.WithCatalog()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make([]chan error, len(im.layers))
	sem := make(chan struct{}, max(jobs, 1))
	for i := range im.layers {
		ready[i] = make(chan error, 1)
		if im.layers[i].fetch == nil {
			ready[i] <- nil
			continue
		}
		go func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				ready[i] <- ctx.Err()
				return
			}
			defer func() { <-sem }()
			ready[i] <- im.layers[i].fetch(ctx)
		}()
	}
	for i, ly := range im.layers {
		select {
		case err = <-ready[i]:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			return Extracted{}, err
		}
		if err := im.apply(ctx, l, i, ly); err != nil {
			return Extracted{}, err
		}
	}
	if !l.Found() {
		msg := fmt.Sprintf("%s holds no %s; its top level holds: %s. Pass --image-path (env AUTO_INFER_LLAMA_CPP_IMAGE_PATH) with the directory that holds llama-server", im.Ref, imagePath, strings.Join(l.TopLevel(), ", "))
		if t := l.LinkTarget(); t != "" {
			msg = fmt.Sprintf("%s: %s is a symlink to %s; pass --image-path %s", im.Ref, imagePath, t, t)
		}
		return Extracted{}, bad(msg, nil)
	}
	stats, err := l.Finish()
	if err != nil {
		return Extracted{Stats: stats}, fmt.Errorf("%s: %w", im.Ref, err)
	}
	x := Extracted{Stats: stats}
	if o.WithLibs {
		libDir := "."
		if fi, err := root.Stat("llama-server"); err != nil || !fi.Mode().IsRegular() {
			if fi, err := root.Stat("bin/llama-server"); err == nil && fi.Mode().IsRegular() {
				libDir = "bin"
			}
		}
		sub, err := root.OpenRoot(libDir)
		if err != nil {
			return x, err
		}
		defer sub.Close()
		if x.Libs, err = im.addLibs(ctx, sub, filepath.Join(dir, libDir), cat, lim, o.System); err != nil {
			return x, fmt.Errorf("%s: copying libraries: %w", im.Ref, err)
		}
	}
	return x, nil
}

// apply verifies and applies layer i.
func (im *Image) apply(ctx context.Context, l *archive.Layers, i int, ly layer) error {
	return im.readLayer(ctx, i, ly, l.Apply)
}

// readLayer hands layer i's tar stream to use (which reads it to its
// end), verifying the blob against its digest as it streams.
func (im *Image) readLayer(ctx context.Context, i int, ly layer, use func(io.Reader) error) error {
	what := fmt.Sprintf("%s: layer %d of %d (%s)", im.Ref, i+1, len(im.layers), short(ly.digest, ly.diffID))
	rc, err := ly.open()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer rc.Close()
	// Hash only what is checked: the blob, the tar inside it, or (an
	// uncompressed layer whose two digests are the same) one of them.
	raw := newHashing(ctxReader{ctx, rc}, ly.digest.Hex != "")
	br := bufio.NewReaderSize(raw, 1<<20)
	head, _ := br.Peek(archive.PeekSize)
	format := archive.Detect(head)
	if len(head) == 0 {
		format = archive.Tar // an empty blob: no entries
	}
	switch format {
	case archive.Tar, archive.Gzip, archive.Zstd:
	default:
		if err := ctx.Err(); err != nil {
			return err
		}
		return bad(fmt.Sprintf("%s is not a tar, tar+gzip or tar+zstd layer", what), nil)
	}
	tr, done, err := archive.Decompress(br, format)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer done()
	plain := newHashing(tr, ly.diffID.Hex != "" && !(format == archive.Tar && ly.digest == ly.diffID))
	err = use(plain)
	if err == nil {
		// The whole blob counts, whatever follows the compressed stream.
		_, err = io.Copy(io.Discard, br)
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if err != nil && ly.digest.Hex != "" && !raw.eof && ly.size > 0 {
		// Hash the rest: a wrong digest explains a garbled layer better
		// than the garbling does.
		_, _ = io.Copy(io.Discard, io.LimitReader(br, ly.size+1))
	}
	if ly.digest.Hex != "" && (err == nil || raw.eof) && raw.sum() != ly.digest {
		return digestError(what, ly.digest, raw.sum())
	}
	if err == nil && ly.diffID.Hex != "" && plain.h != nil && plain.sum() != ly.diffID {
		return digestError(what+" uncompressed", ly.diffID, plain.sum())
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func digestError(what string, want, got v1.Hash) error {
	return bad(fmt.Sprintf("%s: digest mismatch: expected %s, got %s; nothing was installed (a damaged or tampered blob)", what, want, got), nil)
}

func short(hs ...v1.Hash) string {
	for _, h := range hs {
		if h.Hex != "" {
			return h.Algorithm + ":" + h.Hex[:min(12, len(h.Hex))]
		}
	}
	return "no digest"
}

// hashing hashes what is read through it.
type hashing struct {
	r   io.Reader
	h   hash.Hash
	eof bool
}

// newHashing hashes r when on is set, else only passes it through.
func newHashing(r io.Reader, on bool) *hashing {
	h := &hashing{r: r}
	if on {
		h.h = sha256.New()
	}
	return h
}

func (h *hashing) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if h.h != nil {
		h.h.Write(p[:n])
	}
	if err == io.EOF {
		h.eof = true
	}
	return n, err
}

func (h *hashing) sum() v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.h.Sum(nil))}
}

// ctxReader ends a read once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
