package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/llamaboot/llamaboot/internal/appfile"
	"github.com/llamaboot/llamaboot/internal/dirs"
	"github.com/llamaboot/llamaboot/internal/fetch"
)

// registry reads one repository of a registry: manifests by the
// distribution API (client.go), blobs through fetch (resumable, retried,
// checked against their digest) into the cache.
type registry struct {
	ref Ref
	o   Options
	// authd authenticates to the registry over a transport that refuses
	// plain HTTP but to loopback; shared by the manifest and the layer
	// fetches (side by side), it asks for a token once.
	authd *authTransport
	// fromEnv: the credentials came from AUTO_INFER_REGISTRY_AUTH.
	fromEnv bool
}

func openRemote(ctx context.Context, ref Ref, o Options) (*Image, error) {
	r := &registry{ref: ref, o: o}
	base := o.Transport
	if base == nil {
		base = fetch.NewClient(30 * 1e9).Transport
	}
	c, err := r.resolveAuth(ctx)
	if err != nil {
		return nil, err
	}
	r.authd = &authTransport{rt: loopbackHTTPOnly{base}, ref: ref.Remote, creds: c}
	top, mf, mt, offline, err := r.top(ctx)
	if err != nil {
		return nil, err
	}
	im := &Image{Ref: ref, Digest: top, Offline: offline, blobs: []v1.Hash{top}}
	if isIndex(mt, mf) {
		idx, err := v1.ParseIndexManifest(strings.NewReader(string(mf)))
		if err != nil {
			return nil, bad(fmt.Sprintf("%s: the index cannot be read", ref), err)
		}
		d, err := pick(ref, idx, o.Platform)
		if err != nil {
			return nil, err
		}
		if mf, _, err = r.manifest(ctx, d.Digest); err != nil {
			return nil, err
		}
		im.Manifest = d.Digest
		im.blobs = append(im.blobs, d.Digest)
	}
	m, err := parseManifest(ref, mf)
	if err != nil {
		return nil, err
	}
	cfgPath, err := r.blob(ctx, m.Config, "config")
	if err != nil {
		return nil, err
	}
	cfg, err := readSmall(dirBlobs(filepath.Dir(cfgPath)), filepath.Base(cfgPath))
	if err != nil {
		return nil, err
	}
	if im.Config, err = parseConfig(ref, cfg); err != nil {
		return nil, err
	}
	im.Platform = im.Config.Platform().String()
	im.blobs = append(im.blobs, m.Config.Digest)
	for i, d := range m.Layers {
		im.blobs = append(im.blobs, d.Digest)
		if d.MediaType != "" && !d.MediaType.IsDistributable() {
			return nil, bad(fmt.Sprintf("%s: layer %d is a foreign (non-distributable) layer; llamaboot installs only Linux images", ref, i+1), nil)
		}
		file := r.blobPath(d.Digest)
		ly := layer{digest: d.Digest, size: d.Size, open: func() (io.ReadCloser, error) { return os.Open(file) }}
		if _, err := os.Stat(file); err != nil {
			label := fmt.Sprintf("layer %d/%d %s", i+1, len(m.Layers), short(d.Digest))
			ly.fetch = func(ctx context.Context) error {
				_, err := r.blob(ctx, d, label)
				return err
			}
		}
		im.layers = append(im.layers, ly)
	}
	return im, nil
}

// resolveAuth picks the credentials: AUTO_INFER_REGISTRY_AUTH, else the
// Docker config's for this registry, else none (anonymous, with bearer
// tokens when the registry asks for them).
func (r *registry) resolveAuth(ctx context.Context) (creds, error) {
	if a := strings.TrimSpace(r.o.Auth); a != "" {
		r.fromEnv = true
		if user, pass, ok := strings.Cut(a, ":"); ok {
			return creds{Username: user, Password: pass}, nil
		}
		return creds{RegistryToken: a}, nil
	}
	c, err := configCreds(ctx, r.ref.Remote)
	if err != nil {
		return creds{}, bad("the Docker config ($DOCKER_CONFIG/config.json or ~/.docker/config.json) cannot be read", err)
	}
	return c, nil
}

func (r *registry) client() *http.Client { return &http.Client{Transport: r.authd} }

// top resolves the reference to the digest it names and that manifest (or
// index). A digest, or a tag already installed (Known) without Refresh, is
// answered from the cache when the cache holds it.
func (r *registry) top(ctx context.Context) (v1.Hash, []byte, types.MediaType, bool, error) {
	known := r.ref.Remote.Digest
	if known == "" && !r.o.Refresh {
		known = r.o.Known
	}
	if h, err := v1.NewHash(known); err == nil {
		if b, ok := r.cached(h); ok {
			return h, b, "", true, nil
		}
	}
	id := r.ref.Remote.Digest
	if id == "" {
		id = r.ref.Remote.Tag
	}
	h, mf, mt, err := getManifest(ctx, r.client(), r.ref.Remote, id)
	if err != nil {
		return v1.Hash{}, nil, "", false, r.explain(err)
	}
	if d := r.ref.Remote.Digest; d != "" && h.String() != d {
		want, _ := v1.NewHash(d)
		return v1.Hash{}, nil, "", false, digestError(fmt.Sprintf("%s: manifest", r.ref), want, h)
	}
	if err := r.store(h, mf); err != nil {
		return v1.Hash{}, nil, "", false, err
	}
	return h, mf, mt, false, nil
}

// manifest fetches a manifest by digest (checked against it), or takes it
// from the cache.
func (r *registry) manifest(ctx context.Context, h v1.Hash) ([]byte, types.MediaType, error) {
	if b, ok := r.cached(h); ok {
		return b, "", nil
	}
	got, mf, mt, err := getManifest(ctx, r.client(), r.ref.Remote, h.String())
	if err != nil {
		return nil, "", r.explain(err)
	}
	if got != h {
		return nil, "", digestError(fmt.Sprintf("%s: manifest", r.ref), h, got)
	}
	return mf, mt, r.store(h, mf)
}

func (r *registry) blobPath(h v1.Hash) string {
	return filepath.Join(r.o.CacheDir, h.Algorithm, h.Hex)
}

// cached returns a small blob from the cache when it is there and still
// hashes to its digest.
func (r *registry) cached(h v1.Hash) ([]byte, bool) {
	if r.o.CacheDir == "" || h.Algorithm != "sha256" {
		return nil, false
	}
	b, err := readSmall(dirBlobs(filepath.Join(r.o.CacheDir, h.Algorithm)), h.Hex)
	if err != nil || sha256Of(b) != h {
		return nil, false
	}
	return b, true
}

// store keeps a manifest in the cache under its digest.
func (r *registry) store(h v1.Hash, b []byte) error {
	if r.o.CacheDir == "" || h.Algorithm != "sha256" {
		return nil
	}
	dir := filepath.Join(r.o.CacheDir, h.Algorithm)
	if err := dirs.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	// Written aside and renamed, so a reader never sees half a manifest.
	if err := appfile.Replace(filepath.Join(dir, h.Hex), b, 0o644); err != nil {
		return fmt.Errorf("cache manifest %s: %w", h, err)
	}
	return nil
}

// blob downloads a blob into the cache (resuming a part left by an
// interrupted run) and returns its path; fetch checks it against its digest
// before it takes its place.
func (r *registry) blob(ctx context.Context, d v1.Descriptor, label string) (string, error) {
	if d.Digest.Algorithm != "sha256" || len(d.Digest.Hex) != 64 {
		return "", bad(fmt.Sprintf("%s: %s digest %s is not a sha256 digest", r.ref, label, d.Digest), nil)
	}
	dest := r.blobPath(d.Digest)
	if _, err := os.Stat(dest); err == nil {
		return dest, nil
	}
	if err := dirs.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", filepath.Dir(dest), err)
	}
	// The token is fetched before the download starts, so that a refusal
	// is said as the registry's (explain), not as a failed download.
	if _, _, err := r.authd.authorization(ctx, false); err != nil {
		return "", r.explain(err)
	}
	o := r.o.Download
	o.URL = r.ref.Remote.url("blobs", d.Digest.String())
	o.Dest, o.SHA256, o.Label, o.Printer = dest, d.Digest.Hex, label, r.o.Printer
	o.Token = "" // the bundle URL's token is not the registry's
	o.Client = r.client()
	if d.Size > 0 && (o.MaxBytes <= 0 || d.Size < o.MaxBytes) {
		o.MaxBytes = d.Size // the manifest says how large; more is a lie
	}
	if _, err := fetch.Fetch(ctx, o); err != nil {
		var fe *fetch.Error
		if errors.As(err, &fe) && fe.Kind == fetch.Unauthorized {
			return "", bad(fmt.Sprintf("%s: the registry refused %s (HTTP %d); %s", r.ref, label, fe.Status, r.credentialHint()), err)
		}
		if errors.As(err, &fe) && fe.Kind == fetch.Checksum {
			return "", bad(fmt.Sprintf("%s: %s digest mismatch: the registry sent something else than %s; nothing was installed", r.ref, label, d.Digest), err)
		}
		return "", fmt.Errorf("%s: %s: %w", r.ref, label, err)
	}
	return dest, nil
}

// explain turns a registry error into what the user can change.
func (r *registry) explain(err error) error {
	var te *registryError
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return bad(fmt.Sprintf("%s: the registry refused access (HTTP %d); %s", r.ref, te.StatusCode, r.credentialHint()), err)
		case http.StatusNotFound:
			return bad(fmt.Sprintf("%s: no such image in the registry (HTTP 404); check the repository and tag", r.ref), err)
		}
		if te.StatusCode >= 400 && te.StatusCode < 500 {
			return bad(fmt.Sprintf("%s: the registry refused the request (HTTP %d)", r.ref, te.StatusCode), err)
		}
	}
	var refused errHTTPNotLoopback
	if errors.As(err, &refused) {
		return bad(fmt.Sprintf("%s: %v", r.ref, refused), nil)
	}
	return &Error{Msg: fmt.Sprintf("%s: the registry cannot be reached", r.ref), Err: err}
}

func (r *registry) credentialHint() string {
	reg := r.ref.Remote.Registry
	if r.fromEnv {
		return "the credentials in AUTO_INFER_REGISTRY_AUTH were refused: check the user and token (for ghcr.io a GitHub token with read:packages)"
	}
	return fmt.Sprintf("set AUTO_INFER_REGISTRY_AUTH=USER:TOKEN for %s (for ghcr.io a GitHub token with read:packages), or log in with `docker login %s` so the Docker config.json holds them", reg, reg)
}

// loopbackHTTPOnly refuses plain HTTP but to loopback addresses:
// Remote.Scheme picks HTTP for private-range registries too, where a
// token or a layer could be read or changed on the way.
type loopbackHTTPOnly struct{ rt http.RoundTripper }

type errHTTPNotLoopback struct{ host string }

func (e errHTTPNotLoopback) Error() string {
	return fmt.Sprintf("plain HTTP to %s refused: only registries on loopback are reached without TLS", e.host)
}

func (t loopbackHTTPOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !isLoopback(req.URL.Hostname()) {
		return nil, errHTTPNotLoopback{req.URL.Host}
	}
	return t.rt.RoundTrip(req)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
