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
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/llamaboot/llamaboot/internal/appfile"
	"github.com/llamaboot/llamaboot/internal/dirs"
	"github.com/llamaboot/llamaboot/internal/fetch"
)

// registry reads one repository of a registry: manifests through
// go-containerregistry, blobs through fetch (resumable, retried, checked
// against their digest) into the cache.
type registry struct {
	ref   Ref
	o     Options
	auth  authn.Authenticator
	rt    http.RoundTripper // plain HTTP refused but to loopback
	mu    sync.Mutex        // guards authd: layers are fetched side by side
	authd http.RoundTripper // rt with the registry's auth; made on first blob fetch
	// fromEnv: the credentials came from AUTO_INFER_REGISTRY_AUTH.
	fromEnv bool
}

func openRemote(ctx context.Context, ref Ref, o Options) (*Image, error) {
	r := &registry{ref: ref, o: o}
	base := o.Transport
	if base == nil {
		base = fetch.NewClient(30 * 1e9).Transport
	}
	r.rt = loopbackHTTPOnly{base}
	if err := r.resolveAuth(ctx); err != nil {
		return nil, err
	}
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
func (r *registry) resolveAuth(ctx context.Context) error {
	if a := strings.TrimSpace(r.o.Auth); a != "" {
		r.fromEnv = true
		if user, pass, ok := strings.Cut(a, ":"); ok {
			r.auth = authn.FromConfig(authn.AuthConfig{Username: user, Password: pass})
		} else {
			r.auth = authn.FromConfig(authn.AuthConfig{RegistryToken: a})
		}
		return nil
	}
	auth, err := authn.Resolve(ctx, authn.DefaultKeychain, r.ref.Remote.Context())
	if err != nil {
		return bad("the Docker config ($DOCKER_CONFIG/config.json or ~/.docker/config.json) cannot be read", err)
	}
	r.auth = auth
	return nil
}

func (r *registry) options(ctx context.Context) []remote.Option {
	return []remote.Option{remote.WithContext(ctx), remote.WithAuth(r.auth), remote.WithTransport(r.rt), remote.WithPlatform(r.o.Platform)}
}

// top resolves the reference to the digest it names and that manifest (or
// index). A digest, or a tag already installed (Known) without Refresh, is
// answered from the cache when the cache holds it.
func (r *registry) top(ctx context.Context) (v1.Hash, []byte, types.MediaType, bool, error) {
	known := ""
	if d, ok := r.ref.Remote.(name.Digest); ok {
		known = d.DigestStr()
	} else if !r.o.Refresh {
		known = r.o.Known
	}
	if h, err := v1.NewHash(known); err == nil {
		if b, ok := r.cached(h); ok {
			return h, b, "", true, nil
		}
	}
	d, err := remote.Get(r.ref.Remote, r.options(ctx)...)
	if err != nil {
		return v1.Hash{}, nil, "", false, r.explain(err)
	}
	if err := r.store(d.Digest, d.Manifest); err != nil {
		return v1.Hash{}, nil, "", false, err
	}
	return d.Digest, d.Manifest, d.MediaType, false, nil
}

// manifest fetches a manifest by digest (go-containerregistry checks the
// digest), or takes it from the cache.
func (r *registry) manifest(ctx context.Context, h v1.Hash) ([]byte, types.MediaType, error) {
	if b, ok := r.cached(h); ok {
		return b, "", nil
	}
	d, err := remote.Get(r.ref.Remote.Context().Digest(h.String()), r.options(ctx)...)
	if err != nil {
		return nil, "", r.explain(err)
	}
	if got := sha256Of(d.Manifest); got != h {
		return nil, "", digestError(fmt.Sprintf("%s: manifest", r.ref), h, got)
	}
	return d.Manifest, d.MediaType, r.store(h, d.Manifest)
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
	authd, err := r.authTransport(ctx)
	if err != nil {
		return "", err
	}
	reg := r.ref.Remote.Context()
	o := r.o.Download
	o.URL = fmt.Sprintf("%s://%s/v2/%s/blobs/%s", reg.Scheme(), reg.RegistryStr(), reg.RepositoryStr(), d.Digest)
	o.Dest, o.SHA256, o.Label, o.Printer = dest, d.Digest.Hex, label, r.o.Printer
	o.Token = "" // the bundle URL's token is not the registry's
	o.Client = &http.Client{Transport: authd}
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

// authTransport is the transport that authenticates blob requests,
// made once (a bearer token is fetched then) and shared by the fetches.
func (r *registry) authTransport(ctx context.Context) (http.RoundTripper, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.authd == nil {
		reg := r.ref.Remote.Context()
		rt, err := transport.NewWithContext(ctx, reg.Registry, r.auth, r.rt, []string{reg.Scope(transport.PullScope)})
		if err != nil {
			return nil, r.explain(err)
		}
		r.authd = rt
	}
	return r.authd, nil
}

// explain turns a registry error into what the user can change.
func (r *registry) explain(err error) error {
	var te *transport.Error
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
	reg := r.ref.Remote.Context().RegistryStr()
	if r.fromEnv {
		return "the credentials in AUTO_INFER_REGISTRY_AUTH were refused: check the user and token (for ghcr.io a GitHub token with read:packages)"
	}
	return fmt.Sprintf("set AUTO_INFER_REGISTRY_AUTH=USER:TOKEN for %s (for ghcr.io a GitHub token with read:packages), or log in with `docker login %s` so the Docker config.json holds them", reg, reg)
}

// loopbackHTTPOnly refuses plain HTTP but to loopback addresses:
// go-containerregistry would fall back to HTTP for private-range registries
// too, where a token or a layer could be read or changed on the way.
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
