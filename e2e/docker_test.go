// Package e2e boots llamaboot in real containers on the local Docker engine.
// Nothing is pulled and no host package is needed: images are built FROM
// scratch around static Go binaries (llamaboot, the stand-in server, and
// e2e/toolbox for a shell and tools in the test image). Each run tags its
// images with its own id and removes them, layers included, when it ends.
package e2e

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
)

const label = "llamaboot-e2e"

// This run's images: tagged per process, so that runs side by side neither
// share nor remove each other's images.
var (
	runID      = fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	baseImage  = "llamaboot-e2e:base-" + runID
	testImage  = "llamaboot-e2e:test-" + runID
	bakedImage = "llamaboot-e2e:baked-" + runID
	runLabel   = label + "=" + runID // on this run's containers and volumes
)

var (
	skipReason string
	standinBin []byte
)

func TestMain(m *testing.M) {
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		skipReason = fmt.Sprintf("no Docker engine answers (%v: %s)", err, bytes.TrimSpace(out))
		os.Exit(m.Run())
	}
	err := buildImages()
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, "building test images:", err)
	} else {
		code = m.Run()
	}
	cleanup()
	if err := removeImages(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e cleanup:", err)
		code = 1
	}
	os.Exit(code)
}

func cleanup() {
	out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label="+runLabel).Output()
	if ids := strings.Fields(string(out)); len(ids) > 0 {
		exec.Command("docker", append([]string{"rm", "-f"}, ids...)...).Run()
	}
	out, _ = exec.Command("docker", "volume", "ls", "-q", "--filter", "label="+runLabel).Output()
	if ids := strings.Fields(string(out)); len(ids) > 0 {
		exec.Command("docker", append([]string{"volume", "rm", "-f"}, ids...)...).Run()
	}
}

// layers are the image ids this run built: each image and the layers
// (intermediate images) under it, noted as they are built.
var layers []string

// removeImages removes this run's images and checks that none of their
// layers is left behind.
func removeImages() error {
	var tags []string
	for _, img := range []string{bakedImage, testImage, baseImage} { // children first
		if exec.Command("docker", "image", "inspect", img).Run() == nil {
			tags = append(tags, img)
		}
	}
	if len(tags) > 0 {
		if _, err := run("docker", append([]string{"rmi"}, tags...)...); err != nil {
			return err
		}
	}
	var left []string
	for _, id := range layers {
		if exec.Command("docker", "image", "inspect", id).Run() == nil {
			left = append(left, id)
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("images left behind after removing %s: %s", strings.Join(tags, " "), strings.Join(left, " "))
	}
	return nil
}

func run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "DOCKER_BUILDKIT=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// build builds an image with no build cache (so no layer is shared with
// another run) and notes its layers for removeImages.
func build(tag, ctx string, args ...string) error {
	if _, err := run("docker", append(append([]string{"build", "-q", "--no-cache", "--force-rm", "--label", label, "-t", tag}, args...), ctx)...); err != nil {
		return err
	}
	out, err := run("docker", "history", "-q", "--no-trunc", tag)
	if err != nil {
		return err
	}
	for _, id := range strings.Fields(out) {
		if id != "<missing>" {
			layers = append(layers, id)
		}
	}
	return nil
}

func buildImages() error {
	ctx, err := os.MkdirTemp("", "llamaboot-e2e-ctx-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(ctx)
	// The user-facing Dockerfile, built FROM scratch around `make build`'s
	// binaries, as the README builds it.
	if _, err := run("make", "-s", "-C", "..", "build", "BINDIR="+filepath.Join(ctx, "bin")); err != nil {
		return err
	}
	if _, err := run("go", "build", "-trimpath", "-o", filepath.Join(ctx, "toolbox"), "./toolbox"); err != nil {
		return err
	}
	if standinBin, err = os.ReadFile(filepath.Join(ctx, "bin", "standin-llama-server")); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(ctx, "llama-server"), standinBin, 0o755); err != nil {
		return err
	}
	df, err := os.ReadFile("../Dockerfile")
	if err != nil {
		return err
	}
	os.WriteFile(filepath.Join(ctx, "Dockerfile"), df, 0o644)
	if err := build(baseImage, ctx, "--build-arg", "BASE_IMAGE=scratch"); err != nil {
		return err
	}
	// Test image: the toolbox for a shell and tools, the stand-in server.
	os.WriteFile(filepath.Join(ctx, "Dockerfile.test"), []byte(`FROM `+baseImage+`
COPY toolbox /bin/toolbox
RUN ["/bin/toolbox", "--install", "/bin"]
COPY llama-server /opt/standin/llama-server
`), 0o644)
	if err := build(testImage, ctx, "-f", filepath.Join(ctx, "Dockerfile.test")); err != nil {
		return err
	}
	// A plain llama-cpp dir baked into an image layer, as old images have.
	legacy := filepath.Join(ctx, "legacy", "bin")
	os.MkdirAll(legacy, 0o755)
	os.WriteFile(filepath.Join(legacy, "llama-server"), []byte("#!/bin/sh\necho legacy\n"), 0o755)
	os.WriteFile(filepath.Join(ctx, "Dockerfile.baked"), []byte("FROM "+testImage+"\nCOPY legacy /soft/app/llama-cpp/\n"), 0o644)
	return build(bakedImage, ctx, "-f", filepath.Join(ctx, "Dockerfile.baked"))
}

func needDocker(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// pkgDir holds release-layout packages; extra makes llama-server differ.
func makePackage(t *testing.T, dir, name, tag, extra string) string {
	t.Helper()
	var buf bytes.Buffer
	server := append(append([]byte(nil), standinBin...), extra...)
	if err := bundlegen.Write(&buf, archive.Gzip, bundlegen.Release(tag, server)); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func md5hex(b []byte) string { s := md5.Sum(b); return hex.EncodeToString(s[:]) }

func docker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run("docker", args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func volume(t *testing.T) string {
	t.Helper()
	return docker(t, "volume", "create", "--label", runLabel)
}

// start runs a detached container and returns its id.
func start(t *testing.T, args ...string) string {
	t.Helper()
	return docker(t, append([]string{"run", "-d", "--label", runLabel}, args...)...)
}

func logs(t *testing.T, id string) string {
	t.Helper()
	out, _ := run("docker", "logs", id)
	return out
}

func waitLogs(t *testing.T, id, want string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		l := logs(t, id)
		if strings.Contains(l, want) {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("container log never said %q:\n%s", want, l)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func exitCode(t *testing.T, id string) string {
	t.Helper()
	docker(t, "wait", id)
	return docker(t, "inspect", "-f", "{{.State.ExitCode}}", id)
}

func TestBootInstallRestartAndNewContainer(t *testing.T) {
	needDocker(t)
	pkgs := t.TempDir()
	makePackage(t, pkgs, "llama-b7100-bin-ubuntu-x64.tar.gz", "b7100", "")
	vol := volume(t)
	env := []string{"--network", "none", "-v", vol + ":/soft/app", "-v", pkgs + ":/pkg:ro",
		"-e", "AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT=1", "-e", "AUTO_INFER_LLAMA_CPP_PKG_PATH=/pkg/llama-b7100-bin-ubuntu-x64.tar.gz"}
	c := start(t, append(env, testImage, "sleep", "600")...)
	l := waitLogs(t, c, "started sleep 600", 30*time.Second)
	if !strings.Contains(l, "activated b7100-") || strings.Contains(l, " started: pid") {
		t.Errorf("first boot should install and start no server:\n%s", l)
	}
	// llama-server runs as a non-root user, its library symlinks intact.
	out, _ := run("docker", "exec", "-u", "1000:1000", c, "/soft/app/llama-cpp/bin/llama-server", "--host", "256.0.0.1")
	if !strings.Contains(out, "STANDIN_ARGV") {
		t.Errorf("llama-server does not run as uid 1000:\n%s", out)
	}
	docker(t, "exec", c, "sh", "-c", `cd /soft/app/llama-cpp && test -L check-and-run-llama-cpp.sh && test -L install-llama-cpp-pkg.sh && test -L get-llama-cpp-pkg.sh && test -L bin/libllama.so && test "$(readlink bin/libllama.so)" = libllama.so.0`)
	marker := docker(t, "exec", c, "cat", "/soft/app/llama-cpp/.installed-from.json")

	// Same container again: nothing copied or extracted.
	docker(t, "restart", "-t", "2", c)
	l = waitLogs(t, c, "nothing to do", 30*time.Second)
	if strings.Count(l, "extracted ") != 1 {
		t.Errorf("restart extracted again:\n%s", l)
	}
	if m := docker(t, "exec", c, "cat", "/soft/app/llama-cpp/.installed-from.json"); m != marker {
		t.Errorf("marker changed on restart:\n%s\n%s", marker, m)
	}
	// A new container on the same volume: the same.
	c2 := start(t, append(env, testImage, "sleep", "600")...)
	l = waitLogs(t, c2, "started sleep", 30*time.Second)
	if !strings.Contains(l, "nothing to do") || strings.Contains(l, "extracted") {
		t.Errorf("new container on the volume reinstalled:\n%s", l)
	}
	if m := docker(t, "exec", c2, "cat", "/soft/app/llama-cpp/.installed-from.json"); m != marker {
		t.Errorf("marker changed in the new container")
	}
}

func TestBakedPlainDirIsReplaced(t *testing.T) {
	needDocker(t)
	pkgs := t.TempDir()
	makePackage(t, pkgs, "pkg.tar.gz", "b7101", "")
	c := start(t, "--network", "none", "-v", pkgs+":/pkg:ro",
		"-e", "AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT=1", "-e", "AUTO_INFER_LLAMA_CPP_PKG_PATH=/pkg/pkg.tar.gz",
		bakedImage, "sh", "-c", `test -L /soft/app/llama-cpp && echo IS-A-LINK; ls /soft/app/llama-cpp.versions; /soft/app/llama-cpp/bin/llama-server --host 256.0.0.1 | head -1`)
	if code := exitCode(t, c); code != "0" {
		t.Fatalf("exit %s\n%s", code, logs(t, c))
	}
	l := logs(t, c)
	for _, want := range []string{"IS-A-LINK", "legacy-", "b7101-", "STANDIN_ARGV"} {
		if !strings.Contains(l, want) {
			t.Errorf("want %q in:\n%s", want, l)
		}
	}
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// serveConfig writes a two-instance config using the installed bundle.
func serveConfig(t *testing.T, ports []int) string {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf("[instance.server]\nhost = \"127.0.0.1\"\n[instance.a.server]\nport = %d\n[instance.b.server]\nport = %d\n", ports[0], ports[1])
	if err := os.WriteFile(filepath.Join(dir, "cfg.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func healthy(port int) bool {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/health", port))
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// The serving tests use the host's network namespace so the servers listen
// on loopback only (no bridge addresses are involved).
func serveArgs(t *testing.T, ports []int, extra ...string) []string {
	pkgs := t.TempDir()
	makePackage(t, pkgs, "pkg.tar.gz", "b7102", "")
	return append([]string{"--network", "host", "-v", pkgs + ":/pkg:ro", "-v", serveConfig(t, ports) + ":/config:ro",
		"-e", "AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT=1", "-e", "AUTO_INFER_LLAMA_CPP_PKG_PATH=/pkg/pkg.tar.gz",
		"-e", "AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "-e", "AUTO_INFER_LLAMA_CPP_CONFIG=/config/cfg.toml", "-e", "STANDIN_LOAD_MS=200"}, extra...)
}

// dockerStop runs `docker stop` and returns how long it took, the
// container's exit code and its log.
func dockerStop(t *testing.T, id string) (time.Duration, string, string) {
	t.Helper()
	begin := time.Now()
	docker(t, "stop", id)
	took := time.Since(begin)
	return took, docker(t, "inspect", "-f", "{{.State.ExitCode}}", id), logs(t, id)
}

func TestServeAndDockerStop(t *testing.T) {
	needDocker(t)
	ports := freePorts(t, 2)
	c := start(t, append(serveArgs(t, ports), testImage)...)
	waitLogs(t, c, "a ready after", 30*time.Second)
	waitLogs(t, c, "b ready after", 30*time.Second)
	for _, p := range ports {
		if !healthy(p) {
			t.Errorf("port %d: /health is not 200", p)
		}
	}
	st := docker(t, "exec", c, "llamaboot", "status", "--json")
	if strings.Count(st, `"state": "ready"`) != 2 || !strings.Contains(st, `"build_tag": "b7102"`) {
		t.Errorf("status:\n%s", st)
	}
	took, code, l := dockerStop(t, c)
	if code != "0" {
		t.Errorf("exit code %s after docker stop", code)
	}
	if took > 5*time.Second || strings.Contains(l, "still running after") || strings.Count(l, "stopped (exit code 0)") != 2 {
		t.Errorf("docker stop took %s; log:\n%s", took, l)
	}
	t.Logf("docker stop with two servers: %s", took.Round(10*time.Millisecond))
}

func TestDockerStopKillsStubbornServer(t *testing.T) {
	needDocker(t)
	ports := freePorts(t, 2)
	c := start(t, append(serveArgs(t, ports, "-e", "STANDIN_IGNORE_TERM=1"), testImage)...)
	waitLogs(t, c, "b ready after", 30*time.Second)
	took, code, l := dockerStop(t, c) // Docker's default: SIGKILL after 10 s
	if code != "0" {
		t.Errorf("exit code %s: llamaboot should have finished before Docker's SIGKILL", code)
	}
	if took >= 10*time.Second || !strings.Contains(l, "SIGKILL") {
		t.Errorf("stop took %s:\n%s", took, l)
	}
	t.Logf("docker stop with servers ignoring SIGTERM: %s", took.Round(10*time.Millisecond))
}

func TestCrashIsRestartedAndVisible(t *testing.T) {
	needDocker(t)
	ports := freePorts(t, 2)
	c := start(t, append(serveArgs(t, ports, "-e", "STANDIN_EXIT_AFTER_MS=300"), testImage)...)
	waitLogs(t, c, "restarting in", 30*time.Second)
	var st struct {
		Instances []struct {
			Name     string `json:"name"`
			Restarts int    `json:"restarts"`
			LastExit string `json:"last_exit"`
		} `json:"instances"`
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		out := docker(t, "exec", c, "llamaboot", "status", "--json")
		json.Unmarshal([]byte(out), &st)
		if len(st.Instances) == 2 && st.Instances[0].Restarts >= 1 && st.Instances[0].LastExit == "exit code 1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed a restart:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestBadPackages(t *testing.T) {
	needDocker(t)
	pkgs := t.TempDir()
	good := makePackage(t, pkgs, "good.tar.gz", "b7103", "")
	os.WriteFile(filepath.Join(pkgs, "corrupt.tar.gz"), []byte("\x1f\x8b\x08\x00garbage"), 0o644)
	var hostile bytes.Buffer
	bundlegen.Write(&hostile, archive.Gzip, append(bundlegen.Release("b6666", []byte("x")), bundlegen.Symlink("llama-b6666/evil", "/etc")))
	os.WriteFile(filepath.Join(pkgs, "hostile.tar.gz"), hostile.Bytes(), 0o644)
	vol := volume(t)
	common := []string{"--network", "none", "-v", vol + ":/soft/app", "-v", pkgs + ":/pkg:ro", "-e", "AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT=1"}

	c := start(t, append(common, "-e", "AUTO_INFER_LLAMA_CPP_PKG_PATH=/pkg/"+filepath.Base(good), testImage, "true")...)
	if code := exitCode(t, c); code != "0" {
		t.Fatalf("good install: %s\n%s", code, logs(t, c))
	}
	sum := md5hex(standinBin)
	for _, bad := range []struct{ name, pkg, want string }{
		{"corrupt", "corrupt.tar.gz", "corrupt"},
		{"hostile", "hostile.tar.gz", `symlink target "/etc" points outside the bundle`},
		{"checksum", filepath.Base(good) + " -e AUTO_INFER_LLAMA_CPP_PKG_SHA256=" + strings.Repeat("a", 64), "checksum mismatch"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			pkgEnv := strings.Fields("-e AUTO_INFER_LLAMA_CPP_PKG_PATH=/pkg/" + bad.pkg)
			args := append(append([]string(nil), common...), pkgEnv...)
			c := start(t, append(args, testImage, "sh", "-c", "md5sum /soft/app/llama-cpp/bin/llama-server")...)
			if code := exitCode(t, c); code != "0" {
				t.Errorf("container should boot on: exit %s", code)
			}
			l := logs(t, c)
			if !strings.Contains(l, "FAILED") || !strings.Contains(l, bad.want) || !strings.Contains(l, sum) {
				t.Errorf("want the failure (%q) and the previous bundle (%s):\n%s", bad.want, sum, l)
			}
			c = start(t, append(append(args, "-e", "AUTO_INFER_LLAMA_CPP_STRICT=1"), testImage, "true")...)
			if code := exitCode(t, c); code != "2" {
				t.Errorf("strict: exit %s, want 2\n%s", code, logs(t, c))
			}
		})
	}
}

func TestTwoContainersRaceOnOneVolume(t *testing.T) {
	needDocker(t)
	pkgs := t.TempDir()
	sums := map[string]string{}
	for _, n := range []string{"one", "two"} {
		makePackage(t, pkgs, n+".tar.gz", "b7104", "\n"+n+strings.Repeat("x", 1<<20))
		sums[n+".tar.gz"] = md5hex(append(append([]byte(nil), standinBin...), "\n"+n+strings.Repeat("x", 1<<20)...))
	}
	vol := volume(t)
	var wg sync.WaitGroup
	for _, n := range []string{"one", "two"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := start(t, "--network", "none", "-v", vol+":/soft/app", "-v", pkgs+":/pkg:ro",
				"-e", "AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT=1", "-e", "AUTO_INFER_LLAMA_CPP_PKG_PATH=/pkg/"+n+".tar.gz", testImage, "true")
			if code := exitCode(t, c); code != "0" {
				t.Errorf("%s: exit %s\n%s", n, code, logs(t, c))
			}
		}()
	}
	wg.Wait()
	out := docker(t, "run", "--rm", "--label", runLabel, "--network", "none", "-v", vol+":/soft/app", testImage,
		"sh", "-c", "cat /soft/app/llama-cpp/.installed-from.json; md5sum /soft/app/llama-cpp/bin/llama-server")
	name := ""
	if m := regexp.MustCompile(`"archive_name": "([^"]+)"`).FindStringSubmatch(out); m != nil {
		name = m[1]
	}
	if want, ok := sums[name]; !ok || !strings.Contains(out, want) {
		t.Errorf("marker says %q but the files do not match it:\n%s", name, out)
	}
}

// The image built as the README says (make build, docker build) names the
// commit it was built from.
func TestImageVersionNamesCommit(t *testing.T) {
	needDocker(t)
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout (%v): no commit to stamp", err)
	}
	out := docker(t, "run", "--rm", "--label", runLabel, "--entrypoint", "/usr/local/bin/llamaboot", baseImage, "version")
	if !strings.Contains(out, "(commit "+strings.TrimSpace(string(head))) {
		t.Errorf("llamaboot version in the image: %s, want commit %s", out, head)
	}
}
