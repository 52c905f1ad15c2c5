package image

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
)

// parseRemote reads references as go-containerregistry's name package
// (which llamaboot used before, and markers written then record) does:
// the same full name, tag, digest and scheme, and the same ones refused.
// Generated from pieces that cover Docker Hub's defaults, ports, loopback
// and private hosts, and malformed tags, repositories and digests.
func TestParseRemoteMatchesGoContainerRegistry(t *testing.T) {
	hex := strings.Repeat("0123456789abcdef", 4)
	registries := []string{"", "docker.io", "index.docker.io", "ghcr.io", "localhost:5000", "localhost", "127.0.0.1:5000",
		"[::1]:5000", "10.1.2.3", "192.168.0.1:443", "172.20.0.1", "8.8.8.8:5000", "reg.local", "a.localhost:80", "bad host.io", "Host.IO", "h.io:x",
		"127.0.0.2:5000", "127.0.0.1:123456", "x.localhost.io", "a.localhost.localhost", ".localhost", "[::1]", "172.32.0.1"}
	repos := []string{"x", "library/x", "org/x", "a/b/c", "UP", "x_y", "x..y", "", "a//b", "-x", "x-y.z", "localhost/x"}
	tags := []string{"", ":latest", ":v1.0", ":b7123-cuda", ":UPPER", ":bad tag", ":", ":" + strings.Repeat("t", 129), ":_x", ":.x"}
	digests := []string{"", "@sha256:" + hex, "@sha256:" + hex[:63], "@sha256:" + strings.ToUpper(hex), "@sha256:" + hex + "0", "@", "@md5:abc"}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(s []string) string { return s[rng.IntN(len(s))] }
	seen := map[string]bool{}
	for range 5000 {
		reg, repo := pick(registries), pick(repos)
		s := repo
		if reg != "" {
			s = reg + "/" + repo
		}
		s += pick(tags) + pick(digests)
		if seen[s] {
			continue
		}
		seen[s] = true
		ours, err := parseRemote(s)
		theirs, gerr := name.ParseReference(s, name.WithDefaultTag("latest"))
		if (err == nil) != (gerr == nil) {
			t.Errorf("%q: ours %v (%v), go-containerregistry's %v", s, ours, err, gerr)
			continue
		}
		if err != nil {
			continue
		}
		tag, digest := "", ""
		switch r := theirs.(type) {
		case name.Tag:
			tag = r.TagStr()
		case name.Digest:
			digest = r.DigestStr()
		}
		if ours.Name() != theirs.Name() || ours.Tag != tag || ours.Digest != digest || ours.Scheme() != theirs.Context().Scheme() {
			t.Errorf("%q: ours %s (tag %q, digest %q, %s), go-containerregistry's %s (tag %q, digest %q, %s)",
				s, ours.Name(), ours.Tag, ours.Digest, ours.Scheme(), theirs.Name(), tag, digest, theirs.Context().Scheme())
		}
		if ours.Registry != theirs.Context().RegistryStr() || ours.Repo != theirs.Context().RepositoryStr() {
			t.Errorf("%q: ours %s %s, go-containerregistry's %s %s", s, ours.Registry, ours.Repo, theirs.Context().RegistryStr(), theirs.Context().RepositoryStr())
		}
	}
	if len(seen) < 1000 {
		t.Fatalf("only %d distinct references generated", len(seen))
	}
}
