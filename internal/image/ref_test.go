package image

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		in, want string
		local    bool
		pinned   bool
		tag      string
	}{
		{"docker://ghcr.io/ggml-org/llama.cpp:server-cuda-b7123", "docker://ghcr.io/ggml-org/llama.cpp:server-cuda-b7123", false, false, "server-cuda-b7123"},
		{"docker://ghcr.io/ggml-org/llama.cpp", "docker://ghcr.io/ggml-org/llama.cpp:latest", false, false, "latest"},
		{"docker://ubuntu:24.04", "docker://index.docker.io/library/ubuntu:24.04", false, false, "24.04"},
		{"docker://127.0.0.1:5000/l@sha256:" + strings.Repeat("a", 64), "docker://127.0.0.1:5000/l@sha256:" + strings.Repeat("a", 64), false, true, ""},
		{"docker-archive:" + dir + "/x.tar", "docker-archive:" + dir + "/x.tar", true, false, ""},
		{"docker-archive:" + dir + "/x.tar:llama:b1", "docker-archive:" + dir + "/x.tar:llama:b1", true, false, ""},
		{"oci:" + dir + ":server", "oci:" + dir + ":server", true, false, ""},
		{"oci-archive:" + dir + "/o.tar", "oci-archive:" + dir + "/o.tar", true, false, ""},
	} {
		r, err := Parse(c.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		if r.String() != c.want || r.Local() != c.local || r.Pinned() != c.pinned || r.Tag() != c.tag {
			t.Errorf("Parse(%q) = %s local=%v pinned=%v tag=%q", c.in, r, r.Local(), r.Pinned(), r.Tag())
		}
	}
	for _, bad := range []string{"docker://user:pw@ghcr.io/x:y", "docker://UPPER/Case", "docker-archive:", "oci:"} {
		_, err := Parse(bad)
		var e *Error
		if err == nil || !errors.As(err, &e) || !e.BadInput() {
			t.Errorf("Parse(%q) = %v, want bad input", bad, err)
		}
	}
}

func TestUnknownTransport(t *testing.T) {
	dir := t.TempDir()
	colon := filepath.Join(dir, "odd:name.tar.gz")
	os.WriteFile(colon, nil, 0o644)
	for in, want := range map[string]string{
		"containers-storage:llama": "containers-storage", "docker:ghcr.io/x": "docker", "ftp://h/x.tgz": "ftp",
		"docker-daemon:llama:b1": "docker-daemon", "S3://bucket/x": "s3",
	} {
		if got, ok := UnknownTransport(in); !ok || got != want {
			t.Errorf("UnknownTransport(%q) = %q %v, want %q", in, got, ok, want)
		}
	}
	for _, in := range []string{"https://h/x.tgz", "http://h/x", "/tmp/x.tar.gz", "./a:b", colon, "docker://x/y", "oci:/d"} {
		if got, ok := UnknownTransport(in); ok {
			t.Errorf("UnknownTransport(%q) = %q, want none", in, got)
		}
	}
}
