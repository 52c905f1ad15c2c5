package fetch

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/llamaboot/llamaboot/internal/printer"
)

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

var secrets = []string{"ghp_SECRETUSER", "SECRETPW", "SECRETSIG", "SECRETTOKEN"}

func assertNoSecrets(t *testing.T, what string, texts ...string) {
	t.Helper()
	all := strings.Join(texts, "\n")
	for _, s := range secrets {
		if strings.Contains(all, s) {
			t.Errorf("%s: %q leaked:\n%s", what, s, all)
		}
	}
}

// TestErrorsAreRedacted: network errors, TLS errors, errors after a redirect
// to a presigned URL, retry warnings and final errors, and --sha256-from
// errors all quote URLs; none may show the secrets in them.
func TestErrorsAreRedacted(t *testing.T) {
	closed := closedPort(t)
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer tlsSrv.Close()
	// A redirect to a presigned URL (the signature in the query) that fails.
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://"+closed+"/bucket/obj.tgz?X-Amz-Signature=SECRETSIG", http.StatusFound)
	}))
	defer redirector.Close()
	tlsHost := strings.TrimPrefix(tlsSrv.URL, "https://")
	cases := map[string]string{
		"network":  "http://ghp_SECRETUSER@" + closed + "/p.tgz?X-Amz-Signature=SECRETSIG",
		"password": "http://user:SECRETPW@" + closed + "/p.tgz",
		"tls":      "https://ghp_SECRETUSER@" + tlsHost + "/p.tgz?sig=SECRETSIG",
		"redirect": redirector.URL + "/p.tgz",
	}
	for name, u := range cases {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			o := opts(t, u)
			o.Token = "SECRETTOKEN"
			o.Retries = 2
			o.Printer = printer.New(&out, &out, "", false)
			_, err := Fetch(context.Background(), o)
			if err == nil {
				t.Fatal("no error")
			}
			if strings.Count(out.String(), "retry ") != 2 || !strings.Contains(err.Error(), "giving up after 3 attempts") {
				t.Errorf("want two retry warnings and a final error:\n%s\n%v", out.String(), err)
			}
			var ue *url.Error
			if !errors.As(err, &ue) {
				t.Fatalf("the url.Error should still be reachable: %v", err)
			}
			assertNoSecrets(t, name, err.Error(), out.String(), ue.URL, ue.Error())
			if name == "tls" && !strings.Contains(err.Error(), "certificate") {
				t.Errorf("the TLS reason is lost: %v", err)
			}
		})
	}
	t.Run("sha256-from", func(t *testing.T) {
		o := opts(t, "")
		o.Token = "SECRETTOKEN"
		for _, u := range []string{
			"http://ghp_SECRETUSER@" + closed + "/SHA256SUMS?sig=SECRETSIG",
			"https://user:SECRETPW@" + tlsHost + "/SHA256SUMS?X-Amz-Signature=SECRETSIG",
		} {
			_, err := SumFromFile(context.Background(), o, u, "x.tgz")
			if err == nil {
				t.Fatal("no error")
			}
			assertNoSecrets(t, "sha256-from", err.Error())
			if !strings.Contains(err.Error(), "/SHA256SUMS?REDACTED") {
				t.Errorf("the URL should still be named, redacted: %v", err)
			}
		}
	})
}

func TestRedactText(t *testing.T) {
	for in, want := range map[string]string{
		`Get "https://ghp_x@h:8/a.tgz?X-Amz-Signature=s": EOF`: `Get "https://h:8/a.tgz?REDACTED": EOF`,
		`download http://h/a?q=1: HTTP 404`:                    `download http://h/a?REDACTED: HTTP 404`,
		`see (http://u:p@h/x).`:                                `see (http://h/x).`,
		`no URL here`:                                          `no URL here`,
	} {
		if got := RedactText(in); got != want {
			t.Errorf("RedactText(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Redact("https://u:p@h.example/a/b.tgz?X-Amz-Signature=1#f"); got != "https://h.example/a/b.tgz?REDACTED" {
		t.Errorf("Redact = %q", got)
	}
}

// headerLog records the Authorization header of each request.
type headerLog struct {
	mu   sync.Mutex
	auth []string
}

func (h *headerLog) add(r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.auth = append(h.auth, r.Header.Get("Authorization"))
}

func (h *headerLog) get() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.auth...)
}

// TestHTTPSToHTTPRedirectRefused: a TLS server redirecting to a plain one
// is refused before anything (token or request) reaches the plain server.
func TestHTTPSToHTTPRedirectRefused(t *testing.T) {
	var plainLog headerLog
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plainLog.add(r)
		w.Write([]byte("data"))
	}))
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+"/p.tgz", http.StatusFound)
	}))
	defer tlsSrv.Close()
	o := opts(t, tlsSrv.URL+"/p.tgz")
	o.Client = tlsSrv.Client()
	o.Token = "SECRETTOKEN"
	_, err := Fetch(context.Background(), o)
	var fe *Error
	if !errors.As(err, &fe) || fe.Kind != Insecure || !strings.Contains(err.Error(), "from https to plain http") {
		t.Fatalf("want an Insecure refusal, got %v", err)
	}
	if got := plainLog.get(); len(got) != 0 {
		t.Errorf("the plain server was contacted: %q", got)
	}
	assertNoSecrets(t, "refusal", err.Error())
}

// TestTokenStaysWithItsOrigin: the token goes to a same-origin redirect,
// not to another port of the same host, and not back after leaving.
func TestTokenStaysWithItsOrigin(t *testing.T) {
	var otherLog, homeLog headerLog
	var home *httptest.Server
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherLog.add(r)
		if r.URL.Path == "/bounce" {
			http.Redirect(w, r, home.URL+"/final.tgz", http.StatusFound)
			return
		}
		w.Write([]byte("from other"))
	}))
	defer other.Close()
	home = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/same":
			http.Redirect(w, r, "/final.tgz", http.StatusFound)
		case "/away":
			http.Redirect(w, r, other.URL+"/obj.tgz", http.StatusFound)
		case "/round-trip":
			http.Redirect(w, r, other.URL+"/bounce", http.StatusFound)
		default:
			homeLog.add(r)
			w.Write([]byte("from home"))
		}
	}))
	defer home.Close()
	if !strings.HasPrefix(other.URL, "http://127.0.0.1:") || other.URL == home.URL {
		t.Fatalf("want two ports on one host: %s %s", home.URL, other.URL)
	}
	fetchWith := func(p string) {
		t.Helper()
		o := opts(t, home.URL+p)
		o.Token = "SECRETTOKEN"
		if _, err := Fetch(context.Background(), o); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	fetchWith("/same")
	if got := homeLog.get(); len(got) != 1 || got[0] != "Bearer SECRETTOKEN" {
		t.Errorf("same-origin redirect should keep the token: %q", got)
	}
	fetchWith("/away")
	if got := otherLog.get(); len(got) != 1 || got[0] != "" {
		t.Errorf("another port got %q", got)
	}
	fetchWith("/round-trip")
	if got := otherLog.get(); len(got) != 2 || got[1] != "" {
		t.Errorf("another port got %q", got)
	}
	if got := homeLog.get(); len(got) != 2 || got[1] != "" {
		t.Errorf("after leaving the origin the token must stay dropped: %q", got)
	}
}

// TestSumFileTokenOnlyToThePackageOrigin: --sha256-from on another origin
// does not get the package's token.
func TestSumFileTokenOnlyToThePackageOrigin(t *testing.T) {
	var log headerLog
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.add(r)
		w.Write([]byte(strings.Repeat("a", 64) + "  x.tgz\n"))
	}))
	defer srv.Close()
	o := opts(t, srv.URL+"/x.tgz")
	o.Token = "tok"
	if _, err := SumFromFile(context.Background(), o, srv.URL+"/SHA256SUMS", "x.tgz"); err != nil {
		t.Fatal(err)
	}
	o.URL = "http://" + closedPort(t) + "/x.tgz"
	if _, err := SumFromFile(context.Background(), o, srv.URL+"/SHA256SUMS", "x.tgz"); err != nil {
		t.Fatal(err)
	}
	if got := log.get(); len(got) != 2 || got[0] != "Bearer tok" || got[1] != "" {
		t.Errorf("Authorization per request = %q", got)
	}
}

// TestNoRefererAcrossRedirects: Go's client would send the presigned URL,
// query and all, as Referer to the redirect target.
func TestNoRefererAcrossRedirects(t *testing.T) {
	var mu sync.Mutex
	var referers []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		referers = append(referers, r.Header.Get("Referer"))
		mu.Unlock()
		w.Write([]byte("object"))
	}))
	defer other.Close()
	home := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/obj.tgz", http.StatusFound)
	}))
	defer home.Close()
	if _, err := Fetch(context.Background(), opts(t, home.URL+"/pkg.tgz?X-Amz-Signature=SECRETSIG")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(referers) != 1 || referers[0] != "" {
		t.Errorf("redirect target got Referer %q", referers)
	}
}

// TestURLsThatCannotBeRedactedAreRefusedUnshown: a quote, space or newline
// inside a URL would cut the redaction of the parser's message short; such
// URLs are refused without being echoed at all.
func TestURLsThatCannotBeRedactedAreRefusedUnshown(t *testing.T) {
	for _, u := range []string{
		`http://user:"SECRETPW@127.0.0.1:1/x.tgz`,
		"http://127.0.0.1:1/x.tgz?X-Amz-Signature=a SECRETSIG",
		"http://127.0.0.1:1/x.tgz?sig=SECRETSIG\nmore",
	} {
		_, err := Fetch(context.Background(), opts(t, u))
		var fe *Error
		if !errors.As(err, &fe) || fe.Kind != BadURL {
			t.Errorf("%q: want a BadURL error, got %v", u, err)
			continue
		}
		assertNoSecrets(t, u, err.Error())
		_, err = SumFromFile(context.Background(), opts(t, "http://127.0.0.1:1/x.tgz"), u, "x.tgz")
		if err == nil {
			t.Errorf("--sha256-from %q accepted", u)
			continue
		}
		assertNoSecrets(t, "--sha256-from "+u, err.Error())
	}
}

func TestIsURLAnyCaseAndSpaces(t *testing.T) {
	for _, u := range []string{"HTTPS://h/x", " https://h/x", "Http://h/x\n"} {
		if !IsURL(u) {
			t.Errorf("IsURL(%q) = false; it would be printed whole as a file name", u)
		}
	}
	for _, u := range []string{"ftp://u:p@h/x", "S3://b/k"} {
		if IsURL(u) || !LooksLikeURL(u) {
			t.Errorf("%q: IsURL %v LooksLikeURL %v", u, IsURL(u), LooksLikeURL(u))
		}
	}
	if LooksLikeURL("/pkg/llama.tar.gz") {
		t.Error("a path looks like a URL")
	}
}
