package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
	"github.com/llamaboot/llamaboot/internal/imagegen"
)

// tokenRegistry is the in-process registry behind a token service, as
// ghcr.io and Docker Hub run them: every /v2/ request needs a bearer token
// for repository:org/llama:pull, got from /token with the credentials it
// wants; blobs are redirected to another host (a CDN), which must never
// see the registry's Authorization.
type tokenRegistry struct {
	srv, cdn *httptest.Server
	// set before use
	user, pass string // basic credentials /token wants ("" none)
	refresh    string // refresh token a POST to /token must carry ("" GETs)
	staticTok  string // a token the registry takes without /token
	failFirst  int    // manifest GETs answered 503 first

	mu          sync.Mutex
	issued      int
	valid       map[string]bool
	tokenReqs   []string // method and scope of each /token request
	cdnAuth     []string // Authorization headers the CDN saw
	manifestErr int
}

func newTokenRegistry(t *testing.T) *tokenRegistry {
	inner := imagegen.Registry()
	t.Cleanup(inner.Close)
	tr := &tokenRegistry{valid: map[string]bool{}}
	tr.cdn = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr.mu.Lock()
		tr.cdnAuth = append(tr.cdnAuth, r.Header.Get("Authorization"))
		tr.mu.Unlock()
		inner.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(tr.cdn.Close)
	tr.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			tr.token(w, r)
			return
		}
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		tr.mu.Lock()
		ok := tr.valid[tok] || (tr.staticTok != "" && tok == tr.staticTok)
		fail := strings.Contains(r.URL.Path, "/manifests/") && tr.manifestErr < tr.failFirst
		if fail && ok {
			tr.manifestErr++
		}
		tr.mu.Unlock()
		if !ok {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="test-registry",scope="repository:org/llama:pull"`, tr.srv.URL))
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		if fail {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			http.Redirect(w, r, tr.cdn.URL+r.URL.Path, http.StatusTemporaryRedirect)
			return
		}
		inner.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(tr.srv.Close)
	return tr
}

func (tr *tokenRegistry) token(w http.ResponseWriter, r *http.Request) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	tr.tokenReqs = append(tr.tokenReqs, r.Method+" "+r.Form.Get("scope")+" "+r.Form.Get("service"))
	u, p, _ := r.BasicAuth()
	switch {
	case tr.refresh != "" && (r.Method != http.MethodPost || r.PostForm.Get("grant_type") != "refresh_token" || r.PostForm.Get("refresh_token") != tr.refresh),
		tr.refresh == "" && tr.user != "" && (u != tr.user || p != tr.pass):
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	tr.issued++
	tok := fmt.Sprintf("tok-%d", tr.issued)
	tr.valid[tok] = true
	key := "token"
	if tr.refresh != "" {
		key = "access_token" // OAuth2's name
	}
	json.NewEncoder(w).Encode(map[string]string{key: tok})
}

// expire makes every token issued so far stale.
func (tr *tokenRegistry) expire() {
	tr.mu.Lock()
	tr.valid = map[string]bool{}
	tr.mu.Unlock()
}

func pushTestImage(t *testing.T, tr *tokenRegistry) string {
	t.Helper()
	ly, err := imagegen.NewLayer(archive.Gzip, []bundlegen.Entry{bundlegen.Dir("app/"), bundlegen.File("app/llama-server", 0o755, "srv")})
	if err != nil {
		t.Fatal(err)
	}
	img, err := imagegen.Image("linux/"+runtime.GOARCH, map[string]string{VersionLabel: "b7001"}, ly)
	if err != nil {
		t.Fatal(err)
	}
	// Pushed past the token service: the CDN host serves the same registry.
	if err := imagegen.Push(strings.TrimPrefix(tr.cdn.URL, "http://")+"/org/llama:b7001", img); err != nil {
		t.Fatal(err)
	}
	tr.cdnAuth = nil
	return "docker://" + strings.TrimPrefix(tr.srv.URL, "http://") + "/org/llama:b7001"
}

// The registry client speaks the distribution spec's token auth: a token
// for pull scope from the service the challenge names (anonymously, with
// a user and password, an OAuth2 refresh token, or a registry token sent as
// is), sent to the registry and never to the host a blob is redirected to;
// fetched again once when the registry refuses it; a registry answering
// 503 is asked again.
func TestRegistryTokenAuth(t *testing.T) {
	cases := []struct {
		name       string
		setup      func(tr *tokenRegistry)
		auth       string // Options.Auth (AUTO_INFER_REGISTRY_AUTH)
		config     string // $DOCKER_CONFIG/config.json, %s the registry
		expire     bool   // tokens go stale after the first manifest
		wantErr    string
		wantTokens []string
	}{
		{name: "anonymous", wantTokens: []string{"GET repository:org/llama:pull test-registry"}},
		{name: "user and password", setup: func(tr *tokenRegistry) { tr.user, tr.pass = "user", "secret" }, auth: "user:secret",
			wantTokens: []string{"GET repository:org/llama:pull test-registry"}},
		{name: "wrong password", setup: func(tr *tokenRegistry) { tr.user, tr.pass = "user", "secret" }, auth: "user:wrong",
			wantErr: "the registry refused access (HTTP 401)"},
		{name: "docker config user", setup: func(tr *tokenRegistry) { tr.user, tr.pass = "user", "secret" },
			config: `{"auths":{"%s":{"username":"user","password":"secret"}}}`, wantTokens: []string{"GET repository:org/llama:pull test-registry"}},
		{name: "docker config refresh token", setup: func(tr *tokenRegistry) { tr.refresh = "refresh" },
			config: `{"auths":{"%s":{"identitytoken":"refresh"}}}`, wantTokens: []string{"POST repository:org/llama:pull test-registry"}},
		{name: "registry token", setup: func(tr *tokenRegistry) { tr.staticTok = "static" }, auth: "static"},
		{name: "stale token", expire: true,
			wantTokens: []string{"GET repository:org/llama:pull test-registry", "GET repository:org/llama:pull test-registry"}},
		{name: "503 then served", setup: func(tr *tokenRegistry) { tr.failFirst = 1 }, wantTokens: []string{"GET repository:org/llama:pull test-registry"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := newTokenRegistry(t)
			ref := pushTestImage(t, tr)
			if c.setup != nil {
				c.setup(tr)
			}
			t.Setenv("HOME", t.TempDir())
			t.Setenv("DOCKER_CONFIG", t.TempDir())
			if c.config != "" {
				host := strings.TrimPrefix(tr.srv.URL, "http://")
				if err := os.WriteFile(filepath.Join(os.Getenv("DOCKER_CONFIG"), "config.json"), []byte(fmt.Sprintf(c.config, host)), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			r, err := Parse(ref)
			if err != nil {
				t.Fatal(err)
			}
			o := Options{Auth: c.auth, CacheDir: t.TempDir()}
			if c.expire {
				o.Transport = expireAfterManifest{http.DefaultTransport, tr}
			}
			im, err := Open(context.Background(), r, o)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, want an error saying %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if im.Version() != "b7001" || im.Layers() != 1 {
				t.Errorf("image read wrong: version %q, %d layers", im.Version(), im.Layers())
			}
			tr.mu.Lock()
			defer tr.mu.Unlock()
			if strings.Join(tr.tokenReqs, "|") != strings.Join(c.wantTokens, "|") {
				t.Errorf("token requests %q, want %q", tr.tokenReqs, c.wantTokens)
			}
			if len(tr.cdnAuth) == 0 {
				t.Error("the config blob was not fetched through the redirect")
			}
			for _, a := range tr.cdnAuth {
				if a != "" {
					t.Errorf("the CDN was sent Authorization %q", a)
				}
			}
			if tr.manifestErr != tr.failFirst {
				t.Errorf("%d manifest requests answered 503, want %d", tr.manifestErr, tr.failFirst)
			}
		})
	}
}

// expireAfterManifest makes the registry's tokens stale once the first
// manifest has been served.
type expireAfterManifest struct {
	rt http.RoundTripper
	tr *tokenRegistry
}

func (e expireAfterManifest) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := e.rt.RoundTrip(r)
	if err == nil && resp.StatusCode == http.StatusOK && strings.Contains(r.URL.Path, "/manifests/") {
		e.tr.expire()
	}
	return resp, err
}

// A manifest asked for by digest that hashes to something else is a
// digest mismatch (bad input, nothing cached), not a registry that cannot
// be reached.
func TestRegistryManifestDigestChecked(t *testing.T) {
	tr := newTokenRegistry(t)
	ref := pushTestImage(t, tr)
	r, err := Parse(ref)
	if err != nil {
		t.Fatal(err)
	}
	im, err := Open(context.Background(), r, Options{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	inner := tr.srv.Config.Handler
	tr.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !strings.Contains(req.URL.Path, "/manifests/") {
			inner.ServeHTTP(w, req)
			return
		}
		rec := httptest.NewRecorder()
		inner.ServeHTTP(rec, req)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(rec.Code)
		w.Write(append(rec.Body.Bytes(), ' ')) // same JSON, other bytes
	})
	cache := t.TempDir()
	r, _ = Parse(strings.Replace(ref, ":b7001", "@"+im.Digest.String(), 1))
	_, err = Open(context.Background(), r, Options{CacheDir: cache})
	var ie *Error
	if err == nil || !errors.As(err, &ie) || !ie.BadInput() || !strings.Contains(err.Error(), "digest mismatch") {
		t.Fatalf("got %v, want a digest mismatch that is bad input", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(cache, "sha256")); len(ents) != 0 {
		t.Errorf("the tampered manifest was cached: %v", ents)
	}
}

// A registry asking for Basic credentials gets the user and password, or a
// registry token as a bearer (go-containerregistry's choice), and nothing
// it did not ask for.
func TestRegistryBasicAuth(t *testing.T) {
	for _, c := range []struct{ auth, wantErr string }{
		{auth: "user:secret"},
		{auth: "static"},
		{auth: "user:wrong", wantErr: "the registry refused access (HTTP 401)"},
		{auth: "", wantErr: "the registry refused access (HTTP 401)"},
	} {
		t.Run(c.auth, func(t *testing.T) {
			tr := newTokenRegistry(t)
			ref := pushTestImage(t, tr)
			// The same registry behind Basic instead of a token service.
			tr.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				u, p, ok := r.BasicAuth()
				if !(ok && u == "user" && p == "secret") && r.Header.Get("Authorization") != "Bearer static" {
					w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				// Proxy to the CDN host, which serves the pushed image.
				req := r.Clone(r.Context())
				req.RequestURI, req.URL.Scheme, req.URL.Host = "", "http", strings.TrimPrefix(tr.cdn.URL, "http://")
				req.Header.Del("Authorization")
				resp, err := http.DefaultTransport.RoundTrip(req)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadGateway)
					return
				}
				defer resp.Body.Close()
				for k, v := range resp.Header {
					w.Header()[k] = v
				}
				w.WriteHeader(resp.StatusCode)
				io.Copy(w, resp.Body)
			})
			t.Setenv("HOME", t.TempDir())
			t.Setenv("DOCKER_CONFIG", t.TempDir())
			r, err := Parse(ref)
			if err != nil {
				t.Fatal(err)
			}
			im, err := Open(context.Background(), r, Options{Auth: c.auth, CacheDir: t.TempDir()})
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, want an error saying %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if im.Version() != "b7001" {
				t.Errorf("version %q", im.Version())
			}
		})
	}
}
