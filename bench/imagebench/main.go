// Command imagebench measures installing llama.cpp from a container image
// against what a user does without llamaboot, side by side in one run:
//
//   - from a registry on loopback: `llamaboot install docker://…` against
//     `docker pull` + `docker create` + `docker cp …:/app` of the same image;
//   - from a `docker save` archive: `llamaboot install docker-archive:…`
//     against `tar -xf` of the same layers, in order.
//
// It needs a Docker engine (which trusts registries on 127.0.0.0/8).
//
//	go run ./bench/imagebench -size 600
package main

import (
	"archive/tar"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
	"github.com/llamaboot/llamaboot/internal/imagegen"
)

func main() {
	sizeMB := flag.Int("size", 600, "image size in MB (a fifth of it outside /app)")
	bin := flag.String("llamaboot", "", "llamaboot binary (default: build one)")
	rounds := flag.Int("rounds", 3, "runs of each contender; medians are reported")
	keep := flag.Bool("keep", false, "keep the work dir")
	flag.Parse()
	log.SetFlags(0)
	if err := exec.Command("docker", "info").Run(); err != nil {
		log.Fatalf("imagebench needs a Docker engine: %v", err)
	}
	work, err := os.MkdirTemp("", "llamaboot-imagebench-")
	check(err)
	if *keep {
		log.Printf("work dir: %s", work)
	} else {
		defer os.RemoveAll(work)
	}
	if *bin == "" {
		*bin = filepath.Join(work, "llamaboot")
		run("go", "build", "-o", *bin, "./cmd/llamaboot")
	}

	total := int64(*sizeMB) << 20
	log.Printf("generating a %d MB image: a base layer, the llama.cpp layer in /app, a small top layer …", *sizeMB)
	img, err := imagegen.Image("linux/"+runtime.GOARCH, map[string]string{"org.opencontainers.image.version": "b7123"},
		layer([]bundlegen.Entry{bundlegen.Dir("usr/"), bundlegen.Dir("usr/lib/"),
			{Name: "usr/lib/libcublas.so.12", Type: tar.TypeReg, Mode: 0o644, Size: total / 5}}),
		layer(appLayer(total*4/5)),
		layer([]bundlegen.Entry{bundlegen.File("app/.wh.README", 0o644, ""), bundlegen.File("app/VERSION", 0o644, "b7123\n")}))
	check(err)

	srv := imagegen.Registry()
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/bench/llama.cpp:server-b7123"
	check(imagegen.Push(ref, img))
	defer exec.Command("docker", "rmi", "-f", ref).Run()

	var lb, dk []time.Duration
	for r := range *rounds {
		app := filepath.Join(work, "app")
		check(os.RemoveAll(app))
		unix.Sync()
		lb = append(lb, timed(*bin, "install", "-q", "--app-dir", app, "docker://"+ref))

		exec.Command("docker", "rmi", "-f", ref).Run()
		out := filepath.Join(work, "docker-out")
		check(os.RemoveAll(out))
		unix.Sync()
		dk = append(dk, timed("sh", "-c", fmt.Sprintf(
			"docker pull -q %[1]s >/dev/null && c=$(docker create %[1]s /none) && docker cp -q \"$c\":/app %[2]s && docker rm \"$c\" >/dev/null", ref, out)))
		log.Printf("round %d: llamaboot %.2fs, docker pull+create+cp %.2fs", r+1, lb[r].Seconds(), dk[r].Seconds())
	}

	// The same image as `docker save` writes it, and its layers for tar.
	saved := filepath.Join(work, "saved.tar")
	run("docker", "save", "-o", saved, ref)
	layers := unpackSave(saved, filepath.Join(work, "save"))
	var lbA, tr []time.Duration
	for r := range *rounds {
		out := filepath.Join(work, "tar-out")
		check(os.RemoveAll(out))
		check(os.Mkdir(out, 0o755))
		unix.Sync()
		var script []string
		for _, l := range layers {
			script = append(script, fmt.Sprintf("tar -xf %s -C %s", l, out))
		}
		tr = append(tr, timed("sh", "-c", strings.Join(script, " && ")))

		app := filepath.Join(work, "app-archive")
		check(os.RemoveAll(app))
		unix.Sync()
		lbA = append(lbA, timed(*bin, "install", "-q", "--app-dir", app, "docker-archive:"+saved))
		log.Printf("round %d: tar -xf of the layers %.2fs, llamaboot docker-archive %.2fs", r+1, tr[r].Seconds(), lbA[r].Seconds())
	}

	fi, _ := os.Stat(saved)
	fmt.Printf("\nimage %d MB (%d layers; docker save %.0f MB), medians of %d\n", *sizeMB, 3, float64(fi.Size())/(1<<20), *rounds)
	fmt.Printf("%-52s %9s %8s\n", "run", "time", "ratio")
	fmt.Printf("%-52s %8.2fs %8s\n", "docker pull + create + cp /app (loopback registry)", median(dk).Seconds(), "1.00x")
	fmt.Printf("%-52s %8.2fs %7.2fx\n", "llamaboot install docker:// (same registry)", median(lb).Seconds(), median(lb).Seconds()/median(dk).Seconds())
	fmt.Printf("%-52s %8.2fs %8s\n", "tar -xf of the same layers, in order", median(tr).Seconds(), "1.00x")
	fmt.Printf("%-52s %8.2fs %7.2fx\n", "llamaboot install docker-archive:", median(lbA).Seconds(), median(lbA).Seconds()/median(tr).Seconds())
}

// appLayer is /app as the official images have it: llama-server and its
// libraries flat, the large CUDA backend most of it.
func appLayer(total int64) []bundlegen.Entry {
	es := []bundlegen.Entry{bundlegen.Dir("app/"), bundlegen.File("app/README", 0o644, "x")}
	for _, p := range []struct {
		name  string
		share int64
	}{{"llama-server", 5}, {"libggml-cuda.so", 60}, {"libllama.so", 15}, {"libggml-cpu.so", 10}, {"libggml-base.so", 5}, {"libmtmd.so", 5}} {
		es = append(es, bundlegen.Entry{Name: "app/" + p.name, Type: tar.TypeReg, Mode: 0o755, Size: total * p.share / 100})
	}
	return es
}

func layer(es []bundlegen.Entry) v1.Layer {
	l, err := imagegen.NewLayer(archive.Gzip, es)
	check(err)
	return l
}

// unpackSave extracts a `docker save` archive and returns its layer tars
// in order, from its manifest.json.
func unpackSave(saved, dir string) []string {
	check(os.MkdirAll(dir, 0o755))
	run("tar", "-xf", saved, "-C", dir)
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	check(err)
	var m []struct{ Layers []string }
	check(json.Unmarshal(b, &m))
	var out []string
	for _, l := range m[0].Layers {
		out = append(out, filepath.Join(dir, l))
	}
	return out
}

func timed(name string, args ...string) time.Duration {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	check(cmd.Run())
	return time.Since(start)
}

func run(name string, args ...string) {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	check(cmd.Run())
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
