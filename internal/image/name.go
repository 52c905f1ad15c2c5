package image

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Registry names as Docker (and go-containerregistry) spell them: a first
// path element holding a dot or colon is the registry, otherwise the image
// is on Docker Hub, and a one-element Hub name is under library/.
const (
	hubRegistry = "index.docker.io"
	hubAlias    = "docker.io"
	hubAuthKey  = "https://index.docker.io/v1/" // Hub's key in a Docker config.json
)

// Remote is a parsed registry reference: REGISTRY/REPO:TAG or
// REGISTRY/REPO@sha256:DIGEST. Parsed here rather than with
// go-containerregistry's name package, whose package-level regexps (and
// go-digest's) every llamaboot command would pay for at start-up.
type Remote struct {
	Registry string // host[:port]; index.docker.io for Docker Hub
	Repo     string // library/ added for a one-element Hub name
	Tag      string // "" when Digest is set
	Digest   string // sha256:HEX, or ""
}

// Name is the reference in full, as the marker records it.
func (r Remote) Name() string {
	if r.Digest != "" {
		return r.Registry + "/" + r.Repo + "@" + r.Digest
	}
	return r.Registry + "/" + r.Repo + ":" + r.Tag
}

// Scheme is https but for registries on loopback or private IPv4
// addresses, as go-containerregistry chooses (plain HTTP off loopback is
// then refused by loopbackHTTPOnly, saying why): localhost:PORT,
// *.localhost, 127.0.0.1, ::1, 10/8, 172.16/12 and 192.168/16.
func (r Remote) Scheme() string {
	reg := r.Registry
	host, _, _ := strings.Cut(reg, ":")
	if ip := net.ParseIP(host); ip != nil && ip.To4() != nil && ip.IsPrivate() {
		return "http"
	}
	if strings.HasPrefix(reg, "localhost:") || reg == "::1" {
		return "http"
	}
	for _, h := range []string{"[::1]", "127.0.0.1"} {
		if rest, ok := strings.CutPrefix(reg, h); ok && optionalPort(rest) {
			return "http"
		}
	}
	if i := strings.LastIndex(reg, ".localhost"); i >= 0 && optionalPort(reg[i+len(".localhost"):]) {
		return "http"
	}
	return "https"
}

// optionalPort: s is "" or ":" and 1 to 5 digits.
func optionalPort(s string) bool {
	return s == "" || s[0] == ':' && len(s) >= 2 && len(s) <= 6 && strings.Trim(s[1:], "0123456789") == ""
}

// url is the address of one of the repository's manifests or blobs.
func (r Remote) url(kind, id string) string {
	return fmt.Sprintf("%s://%s/v2/%s/%s/%s", r.Scheme(), r.Registry, r.Repo, kind, id)
}

// parseRemote reads REGISTRY/REPO[:TAG|@sha256:DIGEST]; the tag defaults to
// latest.
func parseRemote(s string) (Remote, error) {
	var r Remote
	base := s
	if b, d, ok := strings.Cut(s, "@"); ok {
		if !validDigest(d) {
			return Remote{}, fmt.Errorf("%q is not a sha256:DIGEST of 64 hex digits", d)
		}
		base, r.Digest = b, d
	}
	// A colon after the last slash starts the tag; before it, a port.
	if i := strings.LastIndexByte(base, ':'); i > strings.LastIndexByte(base, '/') {
		tag := base[i+1:]
		if !validElement(tag, tagChars, 128) {
			return Remote{}, fmt.Errorf("tag %q: use at most 128 letters, digits, '_', '.' and '-'", tag)
		}
		base = base[:i]
		if r.Digest == "" {
			r.Tag = tag
		}
	}
	if r.Digest == "" && r.Tag == "" {
		r.Tag = "latest"
	}
	r.Repo = base
	if reg, repo, ok := strings.Cut(base, "/"); ok && (strings.ContainsAny(reg, ".:") || reg == "localhost") {
		r.Registry, r.Repo = reg, repo
	}
	if !validElement(r.Repo, repoChars, 255) {
		return Remote{}, fmt.Errorf("repository %q: use lower-case letters, digits, '_', '.', '-' and '/'", r.Repo)
	}
	if u, err := url.Parse("//" + r.Registry); err != nil || u.Host != r.Registry {
		return Remote{}, fmt.Errorf("registry %q is not a host[:port]", r.Registry)
	}
	switch r.Registry {
	case "", hubAlias:
		r.Registry = hubRegistry
	}
	if r.Registry == hubRegistry && !strings.Contains(r.Repo, "/") {
		r.Repo = "library/" + r.Repo
	}
	return r, nil
}

const (
	tagChars  = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."
	repoChars = "abcdefghijklmnopqrstuvwxyz0123456789_-./"
)

func validElement(s, allowed string, maxLen int) bool {
	if s == "" || len(s) > maxLen {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune(allowed, c) {
			return false
		}
	}
	return true
}

func validDigest(d string) bool {
	hex, ok := strings.CutPrefix(d, "sha256:")
	return ok && len(hex) == 64 && strings.Trim(hex, "0123456789abcdef") == ""
}
