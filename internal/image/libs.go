package image

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/preflight"
)

// Lib is a shared library copied from the image into the bundle.
type Lib struct {
	Name string // the soname, as the bundle has it
	From string // where the image's loader finds it, links followed
}

// maxLibRounds bounds how deep the copied libraries' own needs are
// followed (libcublas needs libcublasLt, which needs nothing new).
const maxLibRounds = 8

// addLibs copies into the bundle (dir, opened as root) the shared libraries
// its ELF files need that this container's loader would not find, taken
// from the image's layers where the image's own loader would find them:
// the directories its /etc/ld.so.conf lists, then the default ones.
func (im *Image) addLibs(ctx context.Context, root *os.Root, dir string, cat *archive.Catalog, lim archive.Limits, sys preflight.System) ([]Lib, error) {
	search := loaderDirs(cat)
	var copied []Lib
	tried := map[string]bool{}
	var written int64
	for range maxLibRounds {
		files, err := elfFiles(root, dir)
		if err != nil {
			return copied, err
		}
		want := map[int]map[string]string{} // layer -> image path -> soname
		var round []Lib
		for _, m := range preflight.Unresolved(files, dir, sys) {
			if tried[m.Lib] || strings.Contains(m.Lib, "/") || driverLib(m.Lib) {
				continue
			}
			tried[m.Lib] = true
			for _, d := range search {
				p, e, ok := cat.Resolve(path.Join(d, m.Lib))
				if !ok {
					continue
				}
				if want[e.Layer] == nil {
					want[e.Layer] = map[string]string{}
				}
				want[e.Layer][p] = m.Lib
				round = append(round, Lib{Name: m.Lib, From: "/" + p})
				break
			}
		}
		if len(round) == 0 {
			break
		}
		layers := make([]int, 0, len(want))
		for i := range want {
			layers = append(layers, i)
		}
		sort.Ints(layers)
		for _, i := range layers {
			err := im.readLayer(ctx, i, im.layers[i], func(r io.Reader) error {
				return copyLibs(r, root, want[i], &written, lim)
			})
			if err != nil {
				return copied, err
			}
		}
		copied = append(copied, round...)
	}
	sort.Slice(copied, func(a, b int) bool { return copied[a].Name < copied[b].Name })
	return copied, nil
}

// driverLib reports whether a library belongs to the NVIDIA driver, which
// must match the host's kernel module: it comes from the host (the NVIDIA
// runtime mounts it), never from an image.
func driverLib(name string) bool {
	return strings.HasPrefix(name, "libcuda.so") || strings.HasPrefix(name, "libnvidia-")
}

// copyLibs writes the members of one layer named in want into the bundle
// under their sonames, and reads the layer to its end.
func copyLibs(r io.Reader, root *os.Root, want map[string]string, written *int64, lim archive.Limits) error {
	if lim.MaxBytes <= 0 {
		lim.MaxBytes = archive.DefaultMaxBytes
	}
	br := bufio.NewReaderSize(r, 1<<20)
	tr := tar.NewReader(br)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return bad("corrupt or truncated layer", err)
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		soname, ok := want[name]
		if !ok || h.Typeflag != tar.TypeReg {
			continue
		}
		if *written+h.Size > lim.MaxBytes {
			return bad(fmt.Sprintf("the libraries copied from the image expand past %d bytes (raise --max-bytes if the image is genuine)", lim.MaxBytes), nil)
		}
		f, err := root.OpenFile(soname, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
		if err != nil {
			return fmt.Errorf("copy %s into the bundle: %w", soname, err)
		}
		n, err := io.Copy(f, io.LimitReader(tr, h.Size))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil && n != h.Size {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return fmt.Errorf("copy %s into the bundle: %w", soname, err)
		}
		*written += n
	}
	_, err := io.Copy(io.Discard, br)
	return err
}

// elfFiles lists the bundle's ELF files (by their first bytes).
func elfFiles(root *os.Root, dir string) ([]string, error) {
	var out []string
	err := fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := root.Open(p)
		if err != nil {
			return nil
		}
		defer f.Close()
		head := make([]byte, 4)
		if _, err := io.ReadFull(f, head); err == nil && string(head) == "\x7fELF" {
			out = append(out, filepath.Join(dir, p))
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	return out, err
}

// loaderDirs are the directories the image's loader searches, in order:
// those of its ld.so.conf (includes expanded), then the built-in ones.
func loaderDirs(cat *archive.Catalog) []string {
	var dirs []string
	seen := map[string]bool{}
	add := func(d string) {
		d = path.Clean("/" + d)
		if !seen[d] {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	var read func(name string, depth int)
	read = func(name string, depth int) {
		if depth > 8 {
			return
		}
		for _, line := range strings.Split(string(cat.Conf[name]), "\n") {
			line, _, _ = strings.Cut(line, "#")
			line = strings.TrimSpace(line)
			switch {
			case line == "":
			case strings.HasPrefix(line, "include "):
				pat := strings.TrimSpace(strings.TrimPrefix(line, "include "))
				if !strings.HasPrefix(pat, "/") {
					pat = path.Join("/etc", pat)
				}
				var names []string
				for c := range cat.Conf {
					if ok, _ := path.Match(strings.TrimPrefix(pat, "/"), c); ok {
						names = append(names, c)
					}
				}
				sort.Strings(names)
				for _, n := range names {
					read(n, depth+1)
				}
			default:
				for _, d := range strings.FieldsFunc(line, func(r rune) bool { return r == ':' || r == ',' || r == ' ' || r == '\t' }) {
					add(d)
				}
			}
		}
	}
	read("etc/ld.so.conf", 0)
	triplet := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[runtime.GOARCH]
	if triplet != "" {
		add("/lib/" + triplet)
		add("/usr/lib/" + triplet)
	}
	for _, d := range []string{"/lib64", "/usr/lib64", "/lib", "/usr/lib"} {
		add(d)
	}
	return dirs
}
