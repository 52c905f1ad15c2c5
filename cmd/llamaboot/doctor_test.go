package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

const realPkg = "../../../shared/fixtures/real-llama/llama-b9596-bin-ubuntu-x64.tar.gz"

// cudaBackend puts a CUDA backend beside the installed llama-server: the
// real CPU backend with its libgomp.so.1 entry renamed libcuda.so.1, as a
// CUDA build needs the driver library this container lacks.
func cudaBackend(t *testing.T, bin string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(bin, "libggml-cpu.so"))
	if err != nil {
		t.Fatal(err)
	}
	from, to := []byte("\x00libgomp.so.1\x00"), []byte("\x00libcuda.so.1\x00")
	if bytes.Count(b, from) != 1 {
		t.Fatalf("libggml-cpu.so names libgomp.so.1 %d times", bytes.Count(b, from))
	}
	if err := os.WriteFile(filepath.Join(bin, "libggml-cuda.so"), bytes.Replace(b, from, to, 1), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestDoctor(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the real fixture is an x86-64 build")
	}
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	if r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "install", "-q", realPkg); r.code != 0 {
		t.Fatal(r)
	}
	bin := filepath.Join(app, "llama-cpp", "bin")
	env := []string{"AUTO_INFER_APP_DIR=" + app}
	cfg := writeFile(t, filepath.Join(dir, "real.toml"), "[instance.g.server]\nport = 1\n")

	r := runLB(t, env, "doctor", "--config", cfg)
	if r.code != 0 || !strings.Contains(r.stdout, "no problems found") {
		t.Fatalf("the real CPU bundle: %v", r)
	}
	cudaBackend(t, bin)
	r = runLB(t, env, "doctor", "--config", cfg)
	want := "libggml-cuda.so: needs libcuda.so.1, the NVIDIA driver library"
	if r.code != 1 || !strings.Contains(r.stderr, "instance g: "+filepath.Join(bin, "libggml-cuda.so")) || !strings.Contains(r.stderr, want) ||
		!strings.Contains(r.stderr, "the CUDA backend will not load: instance g would run on the CPU") {
		t.Fatalf("missing driver: %v", r)
	}
	// Without a config, the installed llama-server alone: no instance
	// exists, so the findings name the bundle's files, not one.
	if r := runLB(t, env, "doctor"); r.code != 1 || !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, "instance") ||
		!strings.Contains(r.stderr, ": "+filepath.Join(bin, "libggml-cuda.so")+": needs libcuda.so.1") ||
		!strings.Contains(r.stderr, "the CUDA backend will not load: llama-server would run on the CPU") {
		t.Fatalf("doctor without config: %v", r)
	}
	// plan says the same, as a warning, and still exits 0.
	if r := runLB(t, env, "plan", "--config", cfg); r.code != 0 || !strings.Contains(r.stderr, "WARNING: instance g: ") || !strings.Contains(r.stderr, want) {
		t.Fatalf("plan: %v", r)
	}
	// A driver library on the instance's LD_LIBRARY_PATH satisfies it.
	drv := filepath.Join(dir, "driver")
	os.MkdirAll(drv, 0o755)
	b, _ := os.ReadFile(filepath.Join(bin, "libggml.so"))
	os.WriteFile(filepath.Join(drv, "libcuda.so.1"), b, 0o755)
	if r := runLB(t, append(env, "LD_LIBRARY_PATH="+drv), "doctor", "--config", cfg); r.code != 0 {
		t.Fatalf("driver on LD_LIBRARY_PATH: %v", r)
	}

	// At boot: a warning, and the server starts; under STRICT nothing starts.
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg}, "--", "sleep", "30")
	waitFor(t, "the boot warning", 20*time.Second, func() bool { return strings.Contains(e.out.String(), "WARNING: preflight: instance g: ") })
	e = startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "AUTO_INFER_LLAMA_CPP_STRICT=1"}, "--", "sleep", "30")
	select {
	case <-e.done:
	case <-time.After(20 * time.Second):
		t.Fatal("STRICT boot with a finding did not stop")
	}
	if e.code == 0 || !strings.Contains(e.out.String(), "ERROR: preflight: instance g: ") || !strings.Contains(e.out.String(), "no server was started") {
		t.Fatalf("STRICT boot: exit %d\n%s", e.code, e.out)
	}
}

// TestDoctorDevices: what llama-server lists under each instance's
// environment against gpu_ids and n_gpu_layers (the stand-in lists
// STANDIN_DEVICES, filtered by CUDA_VISIBLE_DEVICES as CUDA does).
func TestDoctorDevices(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "gpu.toml"), fmt.Sprintf(`
[master]
llama_cpp_path = %q
[instance.one.control]
gpu_ids = "1"
[instance.one.server]
port = 1
n_gpu_layers = 99
[instance.two.control]
gpu_ids = "0,1"
[instance.two.server]
port = 2
[instance.cpu.control]
gpu_ids = "none"
[instance.cpu.server]
port = 3
n_gpu_layers = 99
`, standin))
	two := "STANDIN_DEVICES=CUDA0: NVIDIA A100 (81920 MiB, 80000 MiB free);CUDA1: NVIDIA A100 (81920 MiB, 80000 MiB free)"
	if r := runLB(t, []string{two}, "doctor", "--config", cfg); r.code != 0 {
		t.Fatalf("two GPUs seen: %v", r)
	}
	r := runLB(t, []string{"STANDIN_DEVICES=CUDA0: NVIDIA A100 (81920 MiB, 80000 MiB free)"}, "doctor", "--config", cfg)
	if r.code != 1 || !strings.Contains(r.stderr, `instance one: `) || !strings.Contains(r.stderr, `--list-devices shows no GPU under the instance's environment (CUDA_VISIBLE_DEVICES="1")`) ||
		!strings.Contains(r.stderr, "instance one asks for gpu_ids 1, n_gpu_layers 99 and would run on the CPU") ||
		!strings.Contains(r.stderr, "instance two asks for gpu_ids 0,1 (2 GPUs) and gets fewer") || strings.Contains(r.stderr, "instance cpu") {
		t.Fatalf("one GPU seen: %v", r)
	}
}

// TestStatusShowsDevices runs the real llama-server asking for GPU layers
// on this GPU-less machine: status says it runs on the CPU, as the
// server's own device list at its start says.
func TestStatusShowsDevices(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the real fixture is an x86-64 build")
	}
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	if r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "install", "-q", realPkg); r.code != 0 {
		t.Fatal(r)
	}
	model, err := filepath.Abs("../../../shared/fixtures/real-llama/tiny-512.gguf")
	if err != nil {
		t.Fatal(err)
	}
	port := freePorts(t, 1)[0]
	cfg := writeFile(t, filepath.Join(dir, "g.toml"), fmt.Sprintf("[instance.control]\nlog_dir = %q\n[instance.g.server]\nhost = \"127.0.0.1\"\nport = %d\nmodel = %q\nn_gpu_layers = 99\n", dir, port, model))
	startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg}, "--", "sleep", "60")
	var r result
	waitFor(t, "status listing g's devices", 60*time.Second, func() bool {
		r = runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "status")
		return strings.Contains(r.stdout, "devices (as each server listed them at its last start):")
	})
	if !regexp.MustCompile(`\n  g +CPU .*MiB free\) — llama-server found no usable GPU: it runs on the CPU\n`).MatchString(r.stdout) {
		t.Fatalf("status:\n%s", r.stdout)
	}
	// --json says the same per instance.
	r = runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "status", "--json")
	var st struct {
		Instances []struct {
			Name    string
			Devices []struct {
				Name        string `json:"name"`
				Description string `json:"description"`
			} `json:"devices"`
			NoUsableGPU *bool `json:"no_usable_gpu"`
		} `json:"instances"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st.Instances) != 1 {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	g := st.Instances[0]
	if g.Name != "g" || len(g.Devices) != 1 || g.Devices[0].Name != "CPU" || !strings.HasSuffix(g.Devices[0].Description, "MiB free)") ||
		g.NoUsableGPU == nil || !*g.NoUsableGPU {
		t.Fatalf("status --json instance g: %+v\n%s", g, r.stdout)
	}
}

// TestStatusNoUsableGPUOnlyWhenAsked runs three instances whose server
// warns, as llama-server does for any --n-gpu-layers on a machine without
// a usable GPU, that it found none: status says it runs on the CPU only
// for the one that asks for GPU layers, not for those that ask for the CPU
// (gpu_ids "none", n_gpu_layers 0), for which doctor finds nothing either.
func TestStatusNoUsableGPUOnlyWhenAsked(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	exe := writeFile(t, filepath.Join(dir, "llama-server"), fmt.Sprintf(`#!/bin/sh
printf 'warning: no usable GPU found, --gpu-layers option will be ignored\n0.00.011.466 I device_info:\n0.00.011.476 I   - CPU     : AMD EPYC (24105 MiB, 24105 MiB free)\n0.00.011.581 I system_info: n_threads = 2\n'
exec %q "$@"
`, standin))
	if err := os.Chmod(exe, 0o755); err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 3)
	cfg := writeFile(t, filepath.Join(dir, "g.toml"), fmt.Sprintf(`[master]
llama_cpp_path = %q
[instance.control]
log_dir = %q
[instance.server]
host = "127.0.0.1"
[instance.gpu.server]
port = %d
n_gpu_layers = 99
[instance.none.control]
gpu_ids = "none"
[instance.none.server]
port = %d
n_gpu_layers = 99
[instance.zero.server]
port = %d
n_gpu_layers = 0
`, exe, dir, ports[0], ports[1], ports[2]))
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=50"})
	e.waitReady(t, "gpu", "none", "zero")
	appEnv := []string{"AUTO_INFER_APP_DIR=" + app}
	r := runLB(t, appEnv, "status")
	for _, n := range []string{"gpu", "none", "zero"} {
		line := regexp.MustCompile(`\n  ` + n + ` +CPU AMD EPYC \(24105 MiB, 24105 MiB free\)( — llama-server found no usable GPU: it runs on the CPU)?\n`).FindStringSubmatch(r.stdout)
		if line == nil {
			t.Fatalf("status lists no devices for %s:\n%s", n, r.stdout)
		}
		if said := line[1] != ""; said != (n == "gpu") {
			t.Errorf("instance %s: no-usable-GPU note said = %v, want %v:\n%s", n, said, n == "gpu", r.stdout)
		}
	}
	var st struct {
		Instances []struct {
			Name        string `json:"name"`
			NoUsableGPU bool   `json:"no_usable_gpu"`
			Asks        bool   `json:"asks_gpu_layers"`
		} `json:"instances"`
	}
	r = runLB(t, appEnv, "status", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st.Instances) != 3 {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	for _, in := range st.Instances {
		if in.NoUsableGPU != (in.Name == "gpu") || in.Asks != (in.Name == "gpu") {
			t.Errorf("status --json %s: %+v", in.Name, in)
		}
	}
}
