// Command demo shows llamaboot's whole boot on this machine, no GPU needed:
// it packs a bundle in llama.cpp's release layout (with the stand-in
// llama-server, not a real one), boots `llamaboot entry` on a temp app dir
// with a two-instance config, waits until both answer /health, queries
// /v1/models, prints the status, and stops everything with SIGTERM.
//
//	make demo     (builds bin/llamaboot and bin/standin-llama-server first)
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/llamaboot/llamaboot/internal/archive"
	"github.com/llamaboot/llamaboot/internal/bundlegen"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("[demo] ")
	lb, _ := filepath.Abs("bin/llamaboot")
	standin, _ := filepath.Abs("bin/standin-llama-server")
	server, err := os.ReadFile(standin)
	check(err, "run `make build` first")

	work, err := os.MkdirTemp("", "llamaboot-demo-")
	check(err, "")
	// llamaboot reads the server's flags from `llama-server --help` run as
	// nobody: the bundle's directories must let others in (MkdirTemp
	// makes 0700).
	check(os.Chmod(work, 0o755), "")
	app := filepath.Join(work, "app")
	pkg := filepath.Join(work, "llama-b7123-bin-ubuntu-x64.tar.gz")
	var buf bytes.Buffer
	check(bundlegen.Write(&buf, archive.Gzip, bundlegen.Release("b7123", server)), "")
	check(os.WriteFile(pkg, buf.Bytes(), 0o644), "")
	log.Printf("packed %s (llama.cpp release layout; llama-server is a STAND-IN that loads no model)", pkg)

	// llamaboot refuses to start an instance whose model file is missing;
	// the stand-in never reads them, so empty files do.
	models := filepath.Join(work, "models")
	check(os.MkdirAll(models, 0o755), "")
	for _, m := range []string{"chat.gguf", "embed.gguf"} {
		check(os.WriteFile(filepath.Join(models, m), nil, 0o644), "")
	}
	ports := [2]int{freePort(), freePort()}
	cfg := filepath.Join(work, "demo.toml")
	check(os.WriteFile(cfg, []byte(fmt.Sprintf(`# no llama_cpp_path: the installed bundle is used
[instance.control]
log_dir = %q
[instance.server]
host = "127.0.0.1"
n_gpu_layers = 0 # the stand-in runs on the CPU: asking for GPU layers would be warned about
flash_attn = "auto"
[instance.chat.server]
model = %q
alias = "chat"
port = %d
[instance.embed.server]
model = %q
alias = "embed"
port = %d
embeddings = true
`, filepath.Join(work, "logs"), filepath.Join(models, "chat.gguf"), ports[0], filepath.Join(models, "embed.gguf"), ports[1])), 0o644), "")
	log.Printf("config %s", cfg)

	cmd := exec.Command(lb, "entry")
	cmd.Env = append(os.Environ(),
		"AUTO_INFER_APP_DIR="+app,
		"AUTO_INFER_LLAMA_CPP_GET_PKG_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_PKG_PATH="+pkg,
		"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG="+cfg,
		"STANDIN_LOAD_MS=800")
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	log.Printf("booting: %s entry (as a container would, with the AUTO_INFER_* variables)", lb)
	check(cmd.Start(), "")
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		n := 0
		for sc.Scan() {
			fmt.Println("   ", sc.Text())
			if strings.Contains(sc.Text(), " ready after ") {
				if n++; n == 2 {
					close(ready)
				}
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		log.Fatal("instances did not become ready")
	}
	for _, p := range ports {
		for _, path := range []string{"/health", "/v1/models"} {
			url := fmt.Sprintf("http://127.0.0.1:%d%s", p, path)
			resp, err := http.Get(url)
			check(err, "")
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			log.Printf("GET %s -> %d %s", url, resp.StatusCode, bytes.TrimSpace(body))
		}
	}
	st := exec.Command(lb, "status")
	st.Env = append(os.Environ(), "AUTO_INFER_APP_DIR="+app)
	st.Stdout, st.Stderr = os.Stdout, os.Stderr
	st.Run()

	log.Printf("stopping with SIGTERM (what docker stop sends)")
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	err = cmd.Wait()
	log.Printf("llamaboot exited (%v) after %s", exitText(err), time.Since(start).Round(time.Millisecond))
	log.Printf("installed bundle: %s; logs: %s; work dir: %s", filepath.Join(app, "llama-cpp"), filepath.Join(work, "logs"), work)
	log.Printf("next: the same with a real llama.cpp release archive (see README, \"First run\")")
}

func exitText(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err, "")
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func check(err error, hint string) {
	if err != nil {
		if hint != "" {
			log.Fatalf("%v (%s)", err, hint)
		}
		log.Fatal(err)
	}
}
