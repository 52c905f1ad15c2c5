package main

import (
	"bytes"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestInstallFromHTTPSWithTestCA: the process trusts a CA given in
// SSL_CERT_FILE, sends the token, and never prints it.
func TestInstallFromHTTPSWithTestCA(t *testing.T) {
	dir := t.TempDir()
	pkg, _ := os.ReadFile(releaseArchive(t, dir, "llama-b7400.tar.gz", "b7400"))
	var auth atomic.Value
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth.Store(r.Header.Get("Authorization"))
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(pkg))
	}))
	defer srv.Close()
	ca := writeFile(t, filepath.Join(dir, "ca.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})))
	app := filepath.Join(dir, "app")
	u := srv.URL + "/llama-b7400.tar.gz"

	r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "install", "--retries", "0", u)
	if r.code != 1 || !strings.Contains(r.stderr, "certificate") {
		t.Errorf("an unknown CA must be refused: %v", r)
	}
	r = runLB(t, []string{"AUTO_INFER_APP_DIR=" + app, "SSL_CERT_FILE=" + ca, "AUTO_INFER_LLAMA_CPP_PKG_TOKEN=tok-123"}, "install", u)
	if r.code != 0 || !strings.Contains(r.stdout, "activated b7400-") {
		t.Fatal(r)
	}
	if auth.Load() != "Bearer tok-123" {
		t.Errorf("Authorization = %v", auth.Load())
	}
	marker, _ := os.ReadFile(filepath.Join(app, "llama-cpp", ".installed-from.json"))
	if strings.Contains(r.stdout+r.stderr+string(marker), "tok-123") {
		t.Error("token leaked into output or marker")
	}
}

// TestInstallThroughProxy: HTTP_PROXY is honoured. The host name is never
// resolved: only the proxy, on loopback, is contacted.
func TestInstallThroughProxy(t *testing.T) {
	dir := t.TempDir()
	pkg, _ := os.ReadFile(releaseArchive(t, dir, "llama-b7401.tar.gz", "b7401"))
	var seen atomic.Value
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.URL.String()) // a proxy gets the absolute URL
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(pkg))
	}))
	defer proxy.Close()
	app := filepath.Join(dir, "app")
	r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app, "HTTP_PROXY=" + proxy.URL, "NO_PROXY="},
		"install", "http://bundles.llamaboot.invalid/llama-b7401.tar.gz")
	if r.code != 0 || seen.Load() != "http://bundles.llamaboot.invalid/llama-b7401.tar.gz" {
		t.Fatalf("proxy saw %v\n%v", seen.Load(), r)
	}
}
