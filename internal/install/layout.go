package install

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"regexp"
	"sort"
	"strings"
	"sync"
)

// Layouts of a bundle, as recorded in the marker.
const (
	LayoutBin     = "bin"     // the seed's: bin/llama-server (+ libraries in bin/ or lib/)
	LayoutRelease = "release" // llama.cpp's release: llama-<tag>/llama-server with lib*.so* beside it
)

// bundleRoot finds the package root inside an extracted staging tree and
// reshapes a release layout so that bin/llama-server exists. It returns the
// root (staging itself, ".", or its single top-level dir) and the layout.
// Every lookup and move goes through the staging root, so no link in the
// bundle can lead a step outside it.
func bundleRoot(staging *os.Root) (root, layout string, err error) {
	candidates := []string{"."}
	entries, err := fs.ReadDir(staging.FS(), ".")
	if err != nil {
		return "", "", err
	}
	if len(entries) == 1 && entries[0].Type().IsDir() {
		candidates = append(candidates, entries[0].Name())
	}
	for _, dir := range candidates {
		if isFile(staging, path.Join(dir, "bin", "llama-server")) {
			return dir, LayoutBin, nil
		}
		if isFile(staging, path.Join(dir, "llama-server")) {
			if err := moveIntoBin(staging, dir); err != nil {
				return "", "", err
			}
			// A relative link resolves from one level deeper once moved.
			if !isFile(staging, path.Join(dir, "bin", "llama-server")) {
				return "", "", &InputError{Msg: "llama-server is a link that no longer leads to a file once the release is moved into bin/; ship the binary itself"}
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

func isFile(root *os.Root, p string) bool {
	fi, err := root.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// moveIntoBin moves every entry of a release dir into dir/bin, so the binary
// and its libraries stay side by side (the release binaries find their
// libraries next to themselves) and relative symlinks between them still hold.
func moveIntoBin(root *os.Root, dir string) error {
	entries, err := fs.ReadDir(root.FS(), dir)
	if err != nil {
		return err
	}
	bin := path.Join(dir, "bin")
	if _, err := root.Lstat(bin); err == nil {
		return &InputError{Msg: fmt.Sprintf("bundle has both llama-server and a non-directory bin at %s", dir)}
	}
	if err := root.Mkdir(bin, 0o755); err != nil {
		return err
	}
	if err := root.Chmod(bin, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		if err := root.Rename(path.Join(dir, e.Name()), path.Join(bin, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// checkReserved refuses a bundle whose top level holds a directory where
// llamaboot writes its marker or helper links: it could not replace it, and
// the helper or marker would silently be missing. A file or link there is
// simply replaced.
func checkReserved(bundle *os.Root) error {
	for _, n := range reservedNames() {
		if fi, err := bundle.Lstat(n); err == nil && fi.IsDir() {
			return &InputError{Msg: fmt.Sprintf("the bundle holds a directory %s, a name llamaboot keeps for its own %s; remove it from the archive", n, reservedUse(n))}
		}
	}
	return nil
}

// reservedNames are the bundle's top-level names that llamaboot writes
// itself: the marker, the helper links, and their temp names.
func reservedNames() []string {
	names := []string{MarkerName, MarkerName + ".tmp"}
	for _, n := range EntryPointNames {
		names = append(names, n, n+".tmp")
	}
	return names
}

func reservedUse(name string) string {
	if strings.HasPrefix(name, MarkerName) {
		return "install marker"
	}
	return "helper link"
}

var buildTagRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`(?:^|[^A-Za-z0-9])(b[0-9]{3,6})(?:[^A-Za-z0-9]|$)`) })

// buildTag extracts a llama.cpp build tag such as b7123 from the first of
// names that carries one.
func buildTag(names ...string) string {
	for _, n := range names {
		if m := buildTagRE().FindStringSubmatch(n); m != nil {
			return m[1]
		}
	}
	return ""
}
