package install

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/llamaboot/llamaboot/internal/appfile"
)

// MarkerName is the file inside the installed bundle that records where it
// came from. The old shell installer wrote the same name with the first three
// fields; they keep their meaning.
const MarkerName = ".installed-from.json"

// Stamp identifies one version of a file cheaply, so a second boot can tell
// "same file" without reading it.
type Stamp struct {
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	Dev     uint64 `json:"dev"`
	Ino     uint64 `json:"ino"`
}

func stampOf(fi fs.FileInfo) Stamp {
	s := Stamp{Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.Dev, s.Ino = uint64(st.Dev), st.Ino
	}
	return s
}

func statStamp(path string) (Stamp, bool) {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return Stamp{}, false
	}
	return stampOf(fi), true
}

// Marker is the content of .installed-from.json.
type Marker struct {
	ArchiveName     string `json:"archive_name"`
	SHA256          string `json:"sha256"`
	InstalledAtUnix int64  `json:"installed_at_unix"`

	SourcePath  string `json:"source_path,omitempty"`
	Size        int64  `json:"size,omitempty"`
	Format      string `json:"format,omitempty"`
	Layout      string `json:"layout,omitempty"`
	BuildTag    string `json:"build_tag,omitempty"`
	VersionDir  string `json:"version_dir,omitempty"`
	CachePath   string `json:"cache_path,omitempty"`
	SourceStamp Stamp  `json:"source_stamp"`
	CacheStamp  Stamp  `json:"cache_stamp"`
	Installer   string `json:"installer,omitempty"`
	// Validators of a downloaded bundle, for --refresh.
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"last_modified,omitempty"`
	// Of a bundle taken from a container image: the reference as given
	// (local paths made absolute), the digest it resolved to (the pin; for a
	// docker-archive the image ID), the platform's manifest when that digest
	// is an index's, the image's version label, the directory taken and the
	// platform.
	ImageRef      string `json:"image_ref,omitempty"`
	ImageDigest   string `json:"image_digest,omitempty"`
	ImageManifest string `json:"image_manifest,omitempty"`
	ImageVersion  string `json:"image_version,omitempty"`
	ImagePath     string `json:"image_path,omitempty"`
	ImagePlatform string `json:"image_platform,omitempty"`
	// ImageLibs are the libraries --with-libs copied from the image's
	// layers: "soname <- /path/in/image", comma-separated (a string keeps
	// the marker comparable).
	ImageLibs string `json:"image_libs,omitempty"`
}

// ReadMarker reads the marker of the bundle installed at dir
// (normally <app-dir>/llama-cpp).
func ReadMarker(dir string) (Marker, error) {
	var m Marker
	b, err := appfile.ReadFile(filepath.Join(dir, MarkerName), 1<<20)
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("read %s: %w", filepath.Join(dir, MarkerName), err)
	}
	return m, nil
}

// writeMarker writes the marker into the bundle atomically and durably.
// The bundle came from an archive, so the temp name may already be taken by
// a planted link: it is removed (not followed) and created exclusively.
func writeMarker(bundle *os.Root, m Marker) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := MarkerName + ".tmp"
	if err := bundle.RemoveAll(tmp); err != nil {
		return fmt.Errorf("write %s: %w", MarkerName, err)
	}
	f, err := bundle.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("write %s: %w", MarkerName, err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = bundle.Rename(tmp, MarkerName)
	}
	if err != nil {
		_ = bundle.Remove(tmp)
		return fmt.Errorf("write %s: %w", MarkerName, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
