package image

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// configCreds finds the credentials go-containerregistry's default
// keychain (the docker CLI's config code underneath) finds, for the same
// files, variables and credential helpers (real processes on PATH).
func TestConfigCredsMatchDefaultKeychain(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	// A credential helper that knows ghcr.io (a user) and quay.io (an
	// identity token), and nothing else.
	helper := `#!/bin/sh
read -r server
case "$server" in
ghcr.io) echo '{"ServerURL":"ghcr.io","Username":"helper-user","Secret":"helper-pass"}' ;;
quay.io) echo '{"ServerURL":"quay.io","Username":"<token>","Secret":"refresh"}' ;;
*) echo "credentials not found in native keychain"; exit 1 ;;
esac
`
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "docker-credential-fake"), []byte(helper), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))

	cases := []struct {
		name     string
		docker   string // $DOCKER_CONFIG/config.json; "-" for none
		home     string // $HOME/.docker/config.json
		podman   string // $REGISTRY_AUTH_FILE
		runtime  string // $XDG_RUNTIME_DIR/containers/auth.json
		envAuth  string // DOCKER_AUTH_CONFIG
		ref      string
		wantAnon bool
	}{
		{name: "nothing", docker: "-", ref: "ghcr.io/org/x", wantAnon: true},
		{name: "auths", docker: `{"auths":{"ghcr.io":{"auth":"` + b64("u:p") + `"}}}`, ref: "ghcr.io/org/x"},
		{name: "other registry", docker: `{"auths":{"ghcr.io":{"auth":"` + b64("u:p") + `"}}}`, ref: "quay.io/org/x", wantAnon: true},
		{name: "repo key first", docker: `{"auths":{"ghcr.io":{"auth":"` + b64("u:p") + `"},"ghcr.io/org/x":{"auth":"` + b64("repo:secret") + `"}}}`, ref: "ghcr.io/org/x"},
		{name: "hub key", docker: `{"auths":{"https://index.docker.io/v1/":{"auth":"` + b64("hub:pw") + `"}}}`, ref: "docker.io/library/x"},
		{name: "hub short name", docker: `{"auths":{"https://index.docker.io/v1/":{"auth":"` + b64("hub:pw") + `"}}}`, ref: "x"},
		{name: "legacy URL key", docker: `{"auths":{"https://reg.example.com/v1/":{"auth":"` + b64("old:pw") + `"}}}`, ref: "reg.example.com/x"},
		{name: "user and password fields", docker: `{"auths":{"ghcr.io":{"username":"u2","password":"p2"}}}`, ref: "ghcr.io/x"},
		{name: "identity token", docker: `{"auths":{"ghcr.io":{"identitytoken":"idt"}}}`, ref: "ghcr.io/x"},
		{name: "registry token", docker: `{"auths":{"ghcr.io":{"registrytoken":"rt"}}}`, ref: "ghcr.io/x"},
		{name: "password with colon", docker: `{"auths":{"ghcr.io":{"auth":"` + b64("u:p:q") + `"}}}`, ref: "ghcr.io/x"},
		{name: "credHelpers", docker: `{"credHelpers":{"ghcr.io":"fake"}}`, ref: "ghcr.io/x"},
		{name: "credHelpers token", docker: `{"credHelpers":{"quay.io":"fake"}}`, ref: "quay.io/x"},
		{name: "credsStore", docker: `{"credsStore":"fake"}`, ref: "ghcr.io/x"},
		{name: "credsStore not found", docker: `{"credsStore":"fake"}`, ref: "reg.example.com/x", wantAnon: true},
		{name: "helper beats auths", docker: `{"credsStore":"fake","auths":{"ghcr.io":{"auth":"` + b64("u:p") + `"}}}`, ref: "ghcr.io/x"},
		{name: "home config", docker: "-", home: `{"auths":{"ghcr.io":{"auth":"` + b64("home:pw") + `"}}}`, ref: "ghcr.io/x"},
		{name: "podman file", docker: "-", podman: `{"auths":{"ghcr.io":{"auth":"` + b64("pod:pw") + `"}}}`, ref: "ghcr.io/x"},
		{name: "podman runtime dir", docker: "-", runtime: `{"auths":{"ghcr.io":{"auth":"` + b64("run:pw") + `"}}}`, ref: "ghcr.io/x"},
		{name: "docker before podman", docker: `{"auths":{"ghcr.io":{"auth":"` + b64("dock:pw") + `"}}}`, podman: `{"auths":{"ghcr.io":{"auth":"` + b64("pod:pw") + `"}}}`, ref: "ghcr.io/x"},
		{name: "DOCKER_AUTH_CONFIG", docker: `{"auths":{"ghcr.io":{"auth":"` + b64("file:pw") + `"}}}`, envAuth: `{"auths":{"ghcr.io":{"auth":"` + b64("env:pw") + `"}}}`, ref: "ghcr.io/x"},
		{name: "DOCKER_AUTH_CONFIG beats a helper", docker: `{"credsStore":"fake"}`, envAuth: `{"auths":{"ghcr.io":{"auth":"` + b64("env:pw") + `"}}}`, ref: "ghcr.io/x"},
		{name: "DOCKER_AUTH_CONFIG, other registry", docker: `{"credsStore":"fake"}`, envAuth: `{"auths":{"quay.io":{"auth":"` + b64("env:pw") + `"}}}`, ref: "ghcr.io/x"},
		{name: "empty file", docker: ``, ref: "ghcr.io/x", wantAnon: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			home, dockerDir, runDir := t.TempDir(), t.TempDir(), t.TempDir()
			t.Setenv("HOME", home)
			t.Setenv("DOCKER_CONFIG", dockerDir)
			t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, "config"))
			t.Setenv("XDG_RUNTIME_DIR", runDir)
			t.Setenv("REGISTRY_AUTH_FILE", "")
			t.Setenv("DOCKER_AUTH_CONFIG", c.envAuth)
			write := func(path, content string) {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if c.docker != "-" {
				write(filepath.Join(dockerDir, "config.json"), c.docker)
			}
			if c.home != "" {
				t.Setenv("DOCKER_CONFIG", "")
				write(filepath.Join(home, ".docker", "config.json"), c.home)
			}
			if c.podman != "" {
				p := filepath.Join(t.TempDir(), "auth.json")
				write(p, c.podman)
				t.Setenv("REGISTRY_AUTH_FILE", p)
			}
			if c.runtime != "" {
				write(filepath.Join(runDir, "containers", "auth.json"), c.runtime)
			}
			r, err := parseRemote(c.ref)
			if err != nil {
				t.Fatal(err)
			}
			ours, err := configCreds(context.Background(), r)
			if err != nil {
				t.Fatal(err)
			}
			repo, err := name.NewRepository(c.ref)
			if err != nil {
				t.Fatal(err)
			}
			a, err := authn.Resolve(context.Background(), authn.DefaultKeychain, repo)
			if err != nil {
				t.Fatal(err)
			}
			ac, err := a.Authorization()
			if err != nil {
				t.Fatal(err)
			}
			theirs := creds{Username: ac.Username, Password: ac.Password, IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken}
			if ours != theirs {
				t.Errorf("ours %+v, go-containerregistry's %+v", ours, theirs)
			}
			if ours.anonymous() != c.wantAnon {
				t.Errorf("anonymous: %v, want %v (%+v)", ours.anonymous(), c.wantAnon, ours)
			}
		})
	}
}

func TestConfigCredsRefusesABrokenConfig(t *testing.T) {
	for _, content := range []string{`{"auths":`, `{"auths":{"ghcr.io":{"auth":"not base64!"}}}`} {
		dir := t.TempDir()
		t.Setenv("HOME", t.TempDir())
		t.Setenv("DOCKER_CONFIG", dir)
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		r, _ := parseRemote("ghcr.io/x")
		if _, err := configCreds(context.Background(), r); err == nil {
			t.Errorf("%s: no error", content)
		}
		repo, _ := name.NewRepository("ghcr.io/x")
		if _, err := authn.Resolve(context.Background(), authn.DefaultKeychain, repo); err == nil {
			t.Errorf("%s: go-containerregistry takes it", content)
		}
	}
}
