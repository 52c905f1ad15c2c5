package install

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Layouts of a bundle, as recorded in the marker.
const (
	LayoutBin     = "bin"     // the seed's: bin/llama-server (+ libraries in bin/ or lib/)
	LayoutRelease = "release" // llama.cpp's release: llama-<tag>/llama-server with lib*.so* beside it
)

// bundleRoot finds the package root inside an extracted staging dir and
// reshapes a release layout so that bin/llama-server exists. It returns the
// root (staging itself or its single top-level dir) and the layout.
func bundleRoot(staging string) (root, layout string, err error) {
	candidates := []string{staging}
	entries, err := os.ReadDir(staging)
	if err != nil {
		return "", "", err
	}
	if len(entries) == 1 && entries[0].Type().IsDir() {
		candidates = append(candidates, filepath.Join(staging, entries[0].Name()))
	}
	for _, dir := range candidates {
		if isFile(filepath.Join(dir, "bin", "llama-server")) {
			return dir, LayoutBin, nil
		}
		if isFile(filepath.Join(dir, "llama-server")) {
			if err := moveIntoBin(dir); err != nil {
				return "", "", err
			}
			return dir, LayoutRelease, nil
		}
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() {
			n += "/"
		}
		names = append(names, n)
	}
	sort.Strings(names)
	top := "nothing (the archive is empty)"
	if len(names) > 0 {
		top = strings.Join(names, ", ")
	}
	return "", "", &InputError{Msg: fmt.Sprintf("no llama-server in the bundle; its top level holds: %s. "+
		"Expected bin/llama-server (optionally under one top-level dir) or llama-<tag>/llama-server as in llama.cpp's releases", top)}
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// moveIntoBin moves every entry of a release dir into dir/bin, so the binary
// and its libraries stay side by side (the release binaries find their
// libraries next to themselves) and relative symlinks between them still hold.
func moveIntoBin(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	bin := filepath.Join(dir, "bin")
	if _, err := os.Lstat(bin); err == nil {
		return &InputError{Msg: fmt.Sprintf("bundle has both llama-server and a non-directory bin at %s", filepath.Base(dir))}
	}
	if err := os.Mkdir(bin, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(bin, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.Rename(filepath.Join(dir, e.Name()), filepath.Join(bin, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

var buildTagRE = regexp.MustCompile(`(?:^|[^A-Za-z0-9])(b[0-9]{3,6})(?:[^A-Za-z0-9]|$)`)

// buildTag extracts a llama.cpp build tag such as b7123 from the first of
// names that carries one.
func buildTag(names ...string) string {
	for _, n := range names {
		if m := buildTagRE.FindStringSubmatch(n); m != nil {
			return m[1]
		}
	}
	return ""
}
