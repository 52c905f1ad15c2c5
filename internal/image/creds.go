package image

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// creds are the credentials for one registry, as a Docker config.json
// holds them. All empty is anonymous.
type creds struct {
	Username, Password string
	IdentityToken      string // an OAuth2 refresh token (docker login to a token service)
	RegistryToken      string // a bearer token sent as is
}

func (c creds) anonymous() bool { return c == creds{} }

// dockerConfig is what llamaboot reads of a Docker config.json (or a
// Podman auth.json, which has the same shape).
type dockerConfig struct {
	Auths       map[string]authEntry `json:"auths"`
	CredsStore  string               `json:"credsStore"`
	CredHelpers map[string]string    `json:"credHelpers"`
}

type authEntry struct {
	Auth          string `json:"auth"` // base64 of user:password
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
	RegistryToken string `json:"registrytoken"`
}

// configCreds finds the credentials for repo (REGISTRY/REPO) the way
// go-containerregistry's default keychain and the docker CLI do: the
// Docker config ($HOME/.docker/config.json or $DOCKER_CONFIG), else
// Podman's auth file ($REGISTRY_AUTH_FILE, then containers/auth.json under
// $XDG_RUNTIME_DIR or $XDG_CONFIG_HOME), else none; in it the key
// REGISTRY/REPO, then REGISTRY (Docker Hub's is https://index.docker.io/v1/),
// from a credential helper when credHelpers or credsStore names one, else
// from auths; DOCKER_AUTH_CONFIG's auths come first.
func configCreds(ctx context.Context, r Remote) (creds, error) {
	path := configPath()
	if path == "" {
		return creds{}, nil
	}
	cf, err := loadConfig(path)
	if err != nil {
		return creds{}, err
	}
	for _, key := range []string{r.Registry + "/" + r.Repo, r.Registry} {
		c, err := cf.get(ctx, authKey(key))
		if err != nil || !c.anonymous() {
			return c, err
		}
	}
	return creds{}, nil
}

func configPath() string {
	home, _ := os.UserHomeDir()
	if home != "" && isFile(filepath.Join(home, ".docker", "config.json")) {
		return configJSON()
	}
	if d := os.Getenv("DOCKER_CONFIG"); d != "" && isFile(filepath.Join(d, "config.json")) {
		return configJSON()
	}
	if p := filepath.Clean(os.Getenv("REGISTRY_AUTH_FILE")); isFile(p) {
		return p
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" && isFile(filepath.Join(d, "containers", "auth.json")) {
		return filepath.Join(d, "containers", "auth.json")
	}
	cfgDir := os.Getenv("XDG_CONFIG_HOME")
	if cfgDir == "" && home != "" {
		cfgDir = filepath.Join(home, ".config")
	}
	if p := filepath.Join(cfgDir, "containers", "auth.json"); cfgDir != "" && isFile(p) {
		return p
	}
	return ""
}

// configJSON is the Docker config the docker CLI reads: $DOCKER_CONFIG's,
// else the home directory's.
func configJSON() string {
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		return filepath.Join(d, "config.json")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".docker", "config.json")
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}

func loadConfig(path string) (*dockerConfig, error) {
	cf := &dockerConfig{}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return cf, nil
	}
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, cf); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	for k, a := range cf.Auths {
		if a.Auth != "" {
			if a.Username, a.Password, err = decodeAuth(a.Auth); err != nil {
				return nil, fmt.Errorf("%s: auths %q: %w", path, k, err)
			}
			cf.Auths[k] = a
		}
	}
	if env := os.Getenv("DOCKER_AUTH_CONFIG"); env != "" {
		var ec dockerConfig
		if err := json.Unmarshal([]byte(env), &ec); err != nil {
			return nil, fmt.Errorf("DOCKER_AUTH_CONFIG: %w", err)
		}
		for k, a := range ec.Auths {
			u, p, err := decodeAuth(a.Auth)
			if err != nil {
				return nil, fmt.Errorf("DOCKER_AUTH_CONFIG: auths %q: %w", k, err)
			}
			if cf.Auths == nil {
				cf.Auths = map[string]authEntry{}
			}
			if cf.CredHelpers == nil {
				cf.CredHelpers = map[string]string{}
			}
			cf.Auths[k] = authEntry{Username: u, Password: p}
			cf.CredHelpers[k] = "" // the variable wins over a helper
		}
	}
	return cf, nil
}

func decodeAuth(s string) (string, string, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return "", "", errors.New("auth is not base64")
	}
	u, p, ok := strings.Cut(string(b), ":")
	if !ok || u == "" {
		return "", "", errors.New("auth is not base64 of USER:PASSWORD")
	}
	return u, strings.Trim(p, "\x00"), nil
}

// authKey is the config key of a registry: Docker Hub's is historical.
func authKey(key string) string {
	switch key {
	case hubRegistry, hubAlias, "registry-1.docker.io":
		return hubAuthKey
	}
	return key
}

func (cf *dockerConfig) get(ctx context.Context, key string) (creds, error) {
	helper, ok := cf.CredHelpers[key]
	if !ok {
		helper = cf.CredsStore
	}
	if helper != "" {
		return credHelper(ctx, helper, key)
	}
	a, ok := cf.Auths[key]
	if !ok {
		// Older configs key by URL (https://host/v1/): compare hosts.
		for k, v := range cf.Auths {
			if hostOf(k) == key {
				a = v
				break
			}
		}
	}
	return creds{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken}, nil
}

func hostOf(key string) string {
	if strings.Contains(key, "://") {
		if u, err := url.Parse(key); err == nil && u.Hostname() != "" {
			if u.Port() == "" {
				return u.Hostname()
			}
			return net.JoinHostPort(u.Hostname(), u.Port())
		}
	}
	h, _, _ := strings.Cut(key, "/")
	return h
}

// credHelper asks docker-credential-HELPER for key's credentials, as the
// docker CLI does; "not found" is anonymous.
func credHelper(ctx context.Context, helper, key string) (creds, error) {
	prog := "docker-credential-" + helper
	cmd := exec.CommandContext(ctx, prog, "get")
	cmd.Stdin = strings.NewReader(key)
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "credentials not found") {
			return creds{}, nil
		}
		return creds{}, fmt.Errorf("%s get %s: %w: %s", prog, key, err, msg)
	}
	var c struct{ Username, Secret string }
	if err := json.Unmarshal(out, &c); err != nil {
		return creds{}, fmt.Errorf("%s get %s: %w", prog, key, err)
	}
	if c.Username == "<token>" {
		return creds{IdentityToken: c.Secret}, nil
	}
	return creds{Username: c.Username, Password: c.Secret}, nil
}
