// Package image reads a llama.cpp bundle out of a container image: from a
// registry (docker://), a `docker save` archive (docker-archive:) or an OCI
// image layout (oci:, oci-archive:). It picks the manifest for the running
// platform, verifies every blob against its digest as it streams, caches
// registry blobs by digest, and applies the layers in order — whiteouts
// included — through the archive package's hostile-entry rules, taking only
// the llama.cpp directory.
package image

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/llamaboot/llamaboot/internal/fetch"
)

// Transports, named as skopeo and friends name them.
const (
	Docker        = "docker"
	DockerArchive = "docker-archive"
	OCI           = "oci"
	OCIArchive    = "oci-archive"
)

// Accepted lists every source form llamaboot installs from, for messages.
const Accepted = "a local archive path, http:// or https:// URL, docker://REGISTRY/REPO:TAG (or @sha256:DIGEST), docker-archive:PATH, oci:DIR or oci-archive:PATH"

// Ref is a parsed image reference.
type Ref struct {
	Transport string
	Path      string // the file or directory of a local transport, absolute
	Name      string // the image inside a local archive or layout (repo:tag, or an OCI ref name); "" for its only one
	Remote    Remote // docker://
}

// String is the reference as the marker records it: local paths made
// absolute, registry names in full.
func (r Ref) String() string {
	switch r.Transport {
	case Docker:
		return "docker://" + r.Remote.Name()
	}
	s := r.Transport + ":" + r.Path
	if r.Name != "" {
		s += ":" + r.Name
	}
	return s
}

// Local reports whether the image is a file or directory on this machine.
func (r Ref) Local() bool { return r.Transport != Docker }

// Pinned reports whether the reference names a manifest digest.
func (r Ref) Pinned() bool {
	return r.Remote.Digest != ""
}

// Tag is the tag a registry reference names, or "".
func (r Ref) Tag() string {
	return r.Remote.Tag
}

var prefixes = []string{Docker + "://", DockerArchive + ":", OCIArchive + ":", OCI + ":"}

// IsSource reports whether s names an image (has one of the transports).
func IsSource(s string) bool {
	s = strings.TrimSpace(s)
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// UnknownTransport reports whether s looks like a transport llamaboot does
// not read (ftp://…, containers-storage:…, docker:… without the slashes)
// rather than a local path, and names it. A colon in a path that exists is
// a path.
func UnknownTransport(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if IsSource(s) {
		return "", false
	}
	n := fetch.LeadingName(s, "+._-")
	if n == 0 || n == len(s) || s[n] != ':' {
		return "", false
	}
	t := strings.ToLower(s[:n])
	if strings.HasPrefix(s[n+1:], "//") {
		return t, t != "http" && t != "https"
	}
	if _, err := os.Lstat(s); err == nil {
		return "", false
	}
	return t, true
}

// Parse reads an image reference with one of the transports.
func Parse(s string) (Ref, error) {
	s = strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(s, Docker+"://"):
		rest := strings.TrimPrefix(s, Docker+"://")
		if strings.Contains(rest, "@") && !strings.Contains(rest, "@sha256:") {
			return Ref{}, bad(fmt.Sprintf("%s: a registry reference holds no credentials (user@…); set AUTO_INFER_REGISTRY_AUTH=USER:TOKEN or log in with docker login", s), nil)
		}
		r, err := parseRemote(rest)
		if err != nil {
			return Ref{}, bad(fmt.Sprintf("%s is not a valid image reference (docker://REGISTRY/REPO:TAG or docker://REGISTRY/REPO@sha256:DIGEST)", s), err)
		}
		return Ref{Transport: Docker, Remote: r}, nil
	case strings.HasPrefix(s, DockerArchive+":"):
		return parseLocal(DockerArchive, strings.TrimPrefix(s, DockerArchive+":"))
	case strings.HasPrefix(s, OCIArchive+":"):
		return parseLocal(OCIArchive, strings.TrimPrefix(s, OCIArchive+":"))
	case strings.HasPrefix(s, OCI+":"):
		return parseLocal(OCI, strings.TrimPrefix(s, OCI+":"))
	}
	t, _ := UnknownTransport(s)
	return Ref{}, bad(fmt.Sprintf("%s: unknown transport %q; llamaboot installs from %s", s, t, Accepted), nil)
}

// parseLocal splits PATH[:NAME] at the first colon, as skopeo does.
func parseLocal(transport, rest string) (Ref, error) {
	p, n, _ := strings.Cut(rest, ":")
	if p == "" {
		return Ref{}, bad(fmt.Sprintf("%s: names no path; write %s:PATH", transport+":"+rest, transport), nil)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return Ref{}, err
	}
	return Ref{Transport: transport, Path: abs, Name: n}, nil
}

// Error is an image llamaboot cannot install from. Bad ones are the
// user's input at fault (exit status 2); the rest (a registry down, a
// network cut) are worth retrying.
type Error struct {
	Msg string
	Err error
	Bad bool
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}
func (e *Error) Unwrap() error { return e.Err }

// BadInput marks the error as the user's input at fault.
func (e *Error) BadInput() bool { return e.Bad }

func bad(msg string, err error) error { return &Error{Msg: msg, Err: err, Bad: true} }
