package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// registryError is a registry's answer other than success: the status
// and the first of its error messages.
type registryError struct {
	StatusCode int
	Detail     string
}

func (e *registryError) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("HTTP %d: %s", e.StatusCode, e.Detail)
	}
	return fmt.Sprintf("HTTP %d", e.StatusCode)
}

func responseError(resp *http.Response) error {
	var body struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &registryError{StatusCode: resp.StatusCode}
	if json.Unmarshal(b, &body) == nil && len(body.Errors) > 0 {
		e.Detail = strings.TrimSpace(body.Errors[0].Code + " " + body.Errors[0].Message)
	}
	return e
}

// authTransport authenticates requests to one repository of a registry,
// by the distribution spec: it asks /v2/ once how (nothing, Basic, or a
// Bearer token from the token service it names, for pull scope) and adds
// that to every request to the registry's own host — never to a host a
// blob is redirected to. A bearer token refused mid-way is fetched again
// once.
type authTransport struct {
	rt    http.RoundTripper
	ref   Remote
	creds creds

	mu     sync.Mutex
	pinged bool
	header string            // Authorization for the registry; "" anonymous
	bearer map[string]string // the Bearer challenge's parameters (realm, service); nil for others
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != t.ref.Registry {
		return t.rt.RoundTrip(req)
	}
	h, bearer, err := t.authorization(req.Context(), false)
	if err != nil {
		return nil, err
	}
	resp, err := t.send(req, h)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || !bearer || (req.Body != nil && req.Body != http.NoBody) {
		return resp, err
	}
	// The token expired (or was revoked): one more, once.
	resp.Body.Close()
	if h, _, err = t.authorization(req.Context(), true); err != nil {
		return nil, err
	}
	return t.send(req, h)
}

func (t *authTransport) send(req *http.Request, auth string) (*http.Response, error) {
	if auth == "" {
		return t.rt.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", auth)
	return t.rt.RoundTrip(r)
}

// authorization is the Authorization header for the registry, asking /v2/
// how on first use (or when renew says the last token was refused), and
// whether it is a bearer token.
func (t *authTransport) authorization(ctx context.Context, renew bool) (string, bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pinged && !renew {
		return t.header, t.bearer != nil, nil
	}
	if !t.pinged {
		scheme, params, err := t.ping(ctx)
		if err != nil {
			return "", false, err
		}
		t.pinged = true
		switch scheme {
		case "basic":
			// As go-containerregistry does: a registry token as a bearer,
			// else a user and password, both given.
			switch c := t.creds; {
			case c.RegistryToken != "":
				t.header = "Bearer " + c.RegistryToken
			case c.Username != "" && c.Password != "":
				req := &http.Request{Header: http.Header{}}
				req.SetBasicAuth(c.Username, c.Password)
				t.header = req.Header.Get("Authorization")
			}
			return t.header, false, nil
		case "bearer":
			t.bearer = params
		default:
			return "", false, nil
		}
	}
	if t.bearer == nil {
		return t.header, false, nil
	}
	tok, err := t.token(ctx)
	if err != nil {
		return "", true, err
	}
	t.header = "Bearer " + tok
	return t.header, true, nil
}

// ping asks the registry's /v2/ which authentication it wants: "" for
// none, else the challenge's scheme (lower case) and parameters.
func (t *authTransport) ping(ctx context.Context) (string, map[string]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s://%s/v2/", t.ref.Scheme(), t.ref.Registry), nil)
	if err != nil {
		return "", nil, err
	}
	resp, err := retried(ctx, func() (*http.Response, error) { return t.rt.RoundTrip(req) })
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return "", nil, nil
	case http.StatusUnauthorized:
		scheme, params := parseChallenge(resp.Header.Get("WWW-Authenticate"))
		return scheme, params, nil
	}
	return "", nil, responseError(resp)
}

// token fetches a pull token for the repository from the token service
// the challenge named: with a registry token as is, with a refresh token
// by OAuth2 POST, else by GET (with the user and password when there are).
func (t *authTransport) token(ctx context.Context) (string, error) {
	if t.creds.RegistryToken != "" {
		return t.creds.RegistryToken, nil
	}
	realm, err := url.Parse(t.bearer["realm"])
	if err != nil || (realm.Scheme != "https" && realm.Scheme != "http") {
		return "", fmt.Errorf("the registry names no usable token service (realm %q)", t.bearer["realm"])
	}
	scope := "repository:" + t.ref.Repo + ":pull"
	var req *http.Request
	if t.creds.IdentityToken != "" {
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {t.creds.IdentityToken},
			"service": {t.bearer["service"]}, "scope": {scope}, "client_id": {"llamaboot"}}
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, realm.String(), strings.NewReader(form.Encode()))
		if err == nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	} else {
		q := realm.Query()
		q.Set("scope", scope)
		if s := t.bearer["service"]; s != "" {
			q.Set("service", s)
		}
		realm.RawQuery = q.Encode()
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, realm.String(), nil)
		if err == nil && (t.creds.Username != "" || t.creds.Password != "") {
			req.SetBasicAuth(t.creds.Username, t.creds.Password)
		}
	}
	if err != nil {
		return "", err
	}
	resp, err := retried(ctx, func() (*http.Response, error) {
		r := req.Clone(ctx)
		if req.GetBody != nil {
			r.Body, _ = req.GetBody()
		}
		return t.rt.RoundTrip(r)
	})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", responseError(resp)
	}
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return "", fmt.Errorf("token service answer: %w", err)
	}
	if body.Token == "" {
		body.Token = body.AccessToken
	}
	if body.Token == "" {
		return "", errors.New("the token service answered no token")
	}
	return body.Token, nil
}

// parseChallenge reads a WWW-Authenticate header: `Bearer realm="…",
// service="…",scope="…"` or `Basic realm="…"`.
func parseChallenge(h string) (string, map[string]string) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	params := map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; {
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		if strings.HasPrefix(v, `"`) {
			end := strings.IndexByte(v[1:], '"')
			if end < 0 {
				params[k] = v[1:]
				break
			}
			params[k], rest = v[1:end+1], v[end+2:]
		} else {
			params[k], rest, _ = strings.Cut(v, ",")
		}
		rest = strings.TrimLeft(strings.TrimSpace(rest), ",")
	}
	return strings.ToLower(scheme), params
}

// manifestTypes is what llamaboot asks a registry for: images and indexes,
// OCI and Docker.
var manifestTypes = strings.Join([]string{
	string(types.OCIManifestSchema1), string(types.OCIImageIndex),
	string(types.DockerManifestSchema2), string(types.DockerManifestList),
}, ", ")

// getManifest fetches the manifest (or index) that id — a tag or digest —
// names, and its digest (the caller checks it against one it asked for).
func getManifest(ctx context.Context, client *http.Client, ref Remote, id string) (v1.Hash, []byte, types.MediaType, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ref.url("manifests", id), nil)
	if err != nil {
		return v1.Hash{}, nil, "", err
	}
	req.Header.Set("Accept", manifestTypes)
	resp, err := retried(ctx, func() (*http.Response, error) { return client.Do(req) })
	if err != nil {
		return v1.Hash{}, nil, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return v1.Hash{}, nil, "", responseError(resp)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJSON+1))
	if err != nil {
		return v1.Hash{}, nil, "", err
	}
	if len(b) > maxJSON {
		return v1.Hash{}, nil, "", fmt.Errorf("manifest %s is larger than %d bytes", id, maxJSON)
	}
	mt := types.MediaType(strings.TrimSpace(strings.Split(resp.Header.Get("Content-Type"), ";")[0]))
	return sha256Of(b), b, mt, nil
}

// retried makes a request up to three times while the registry answers
// a passing failure (a cut connection, 408, 429, 5xx), 1 s then 3 s apart.
func retried(ctx context.Context, do func() (*http.Response, error)) (*http.Response, error) {
	delay := time.Second
	for attempt := 1; ; attempt++ {
		resp, err := do()
		passing := err != nil && (errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE))
		if err == nil {
			switch resp.StatusCode {
			case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
				http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
				passing = true
			}
		}
		if !passing || attempt == 3 {
			return resp, err
		}
		if resp != nil {
			resp.Body.Close()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay *= 3
	}
}
