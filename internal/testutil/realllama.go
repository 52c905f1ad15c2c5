package testutil

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// RealLlama is a real llama.cpp build for tests: the release archive and
// the tiny models of ../shared/fixtures/real-llama, or an official release
// archive and a model of one's own ($LLAMABOOT_REAL_BUNDLE,
// $LLAMABOOT_REAL_MODEL; the long-prompt tests need
// $LLAMABOOT_REAL_MODEL_64K, a model with a 64k context).
type RealLlama struct {
	Archive  string // llama-bNNNN-bin-ubuntu-x64.tar.gz
	Model    string // a small model (tiny-512.gguf)
	Model64K string // the same with a 65,536-token context; "" if none
}

// RealLlamaHowTo says how to make the real-server tests run.
const RealLlamaHowTo = "put the fixture beside the project as ../shared/fixtures/real-llama/ (llama-b9596-bin-ubuntu-x64.tar.gz, tiny-512.gguf, tiny-64k.gguf), " +
	"or set LLAMABOOT_REAL_BUNDLE=/path/to/llama-bNNNN-bin-ubuntu-x64.tar.gz and LLAMABOOT_REAL_MODEL=/path/to/model.gguf"

// FindRealLlama looks for the real build; the error says what is missing.
func FindRealLlama() (RealLlama, error) {
	if b := os.Getenv("LLAMABOOT_REAL_BUNDLE"); b != "" {
		r := RealLlama{Archive: b, Model: os.Getenv("LLAMABOOT_REAL_MODEL"), Model64K: os.Getenv("LLAMABOOT_REAL_MODEL_64K")}
		for _, f := range []string{r.Archive, r.Model} {
			if _, err := os.Stat(f); err != nil {
				return r, fmt.Errorf("LLAMABOOT_REAL_BUNDLE/LLAMABOOT_REAL_MODEL: %w", err)
			}
		}
		return r, nil
	}
	dir, err := fixtureDir()
	if err != nil {
		return RealLlama{}, err
	}
	r := RealLlama{Archive: filepath.Join(dir, "llama-b9596-bin-ubuntu-x64.tar.gz"),
		Model: filepath.Join(dir, "tiny-512.gguf"), Model64K: filepath.Join(dir, "tiny-64k.gguf")}
	for _, f := range []string{r.Archive, r.Model, r.Model64K} {
		if _, err := os.Stat(f); err != nil {
			return r, err
		}
	}
	return r, nil
}

// fixtureDir is ../shared/fixtures/real-llama beside the module's root.
func fixtureDir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(filepath.Dir(d), "shared", "fixtures", "real-llama"), nil
		}
		if d == filepath.Dir(d) {
			return "", fmt.Errorf("no go.mod above %s", wd)
		}
	}
}

// NeedRealLlama returns the real build, or ends the test: skipped (with
// how to run it) on a developer's machine, failed under CI=true, where the
// fixture is always there.
func NeedRealLlama(t testing.TB) RealLlama {
	t.Helper()
	r, err := FindRealLlama()
	if err == nil {
		return r
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("the real llama-server is missing under CI: %v; %s", err, RealLlamaHowTo)
	}
	t.Skipf("REAL LLAMA-SERVER TEST NOT RUN: %v; to run it, %s", err, RealLlamaHowTo)
	return r
}

// NeedRealLlama64K is NeedRealLlama for the long-prompt tests.
func NeedRealLlama64K(t testing.TB) RealLlama {
	t.Helper()
	r := NeedRealLlama(t)
	if r.Model64K == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("the 64k-context model is missing under CI")
		}
		t.Skip("REAL LLAMA-SERVER TEST NOT RUN: set LLAMABOOT_REAL_MODEL_64K to a model with a 65,536-token context")
	}
	return r
}

// RealLlamaBanner is what a test binary prints when the real server is not
// there outside CI: the real-server tests did not run, loudly.
func RealLlamaBanner() string {
	if _, err := FindRealLlama(); err == nil || os.Getenv("CI") == "true" {
		return ""
	}
	line := strings.Repeat("!", 78)
	return fmt.Sprintf("%s\n!! The real llama-server tests DID NOT RUN: the real build is missing.\n!! To run them, %s\n%s\n", line, RealLlamaHowTo, line)
}

var (
	extractOnce sync.Once
	extracted   string
	extractErr  error
)

// RealServerBinary extracts the archive once per test binary (into a
// directory removed by RemoveExtracted) and returns its llama-server.
func RealServerBinary(t testing.TB, r RealLlama) string {
	t.Helper()
	extractOnce.Do(func() {
		dir, err := os.MkdirTemp("", "real-llama-")
		if err != nil {
			extractErr = err
			return
		}
		extracted = dir
		extractErr = extractTarGz(r.Archive, dir)
	})
	if extractErr != nil {
		t.Fatalf("extract %s: %v", r.Archive, extractErr)
	}
	matches, _ := filepath.Glob(filepath.Join(extracted, "*", "llama-server"))
	if len(matches) != 1 {
		t.Fatalf("no single llama-server in %s: %v", r.Archive, matches)
	}
	return matches[0]
}

// RemoveExtracted removes what RealServerBinary extracted.
func RemoveExtracted() {
	if extracted != "" {
		os.RemoveAll(extracted)
	}
}

// extractTarGz unpacks a trusted test archive (files, dirs, symlinks).
func extractTarGz(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, p)
		case tar.TypeReg:
			var w *os.File
			if w, err = os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o755|0o600); err == nil {
				_, err = io.Copy(w, tr)
				w.Close()
			}
		}
		if err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
	}
}
