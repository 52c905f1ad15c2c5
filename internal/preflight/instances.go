package preflight

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/launch"
)

// Instances checks the plan's instances as they would start with environ:
// their executables and backends from the ELF files, then the devices
// llama-server lists under each one's environment against what it asks
// for. An instance whose executable is not there is left to the caller
// (which reports it at its line).
func Instances(ctx context.Context, ins []config.Instance, environ []string, sys System) []Finding {
	var out []Finding
	for _, in := range ins {
		exe, err := launch.Resolve(in, environ)
		if err != nil {
			continue
		}
		env := launch.Environ(environ, in, filepath.Dir(exe))
		out = append(out, Check([]Target{{Instance: in.Name, Executable: exe, LDLibraryPath: lookup(env, "LD_LIBRARY_PATH")}}, sys)...)
		out = append(out, devices(ctx, in, exe, env)...)
	}
	return out
}

func lookup(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], key+"="); ok {
			return v
		}
	}
	return ""
}

// Device is one device llama-server lists (CPU is never listed).
type Device struct{ Name, Description string }

// ListDevices runs `exe --list-devices` under env and reads its list.
func ListDevices(ctx context.Context, exe string, env []string) ([]Device, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "--list-devices")
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-devices: %w", exe, err)
	}
	var ds []Device
	listing := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "Available devices:") {
			listing = true
			continue
		}
		if !listing || !strings.HasPrefix(line, "  ") {
			continue
		}
		name, desc, _ := strings.Cut(strings.TrimSpace(line), ": ")
		ds = append(ds, Device{Name: name, Description: desc})
	}
	if !listing {
		return nil, fmt.Errorf("%s --list-devices printed no device list", exe)
	}
	return ds, nil
}

// gpuLayers is the instance's --n-gpu-layers value, "" when not given.
func gpuLayers(cmd []string) string {
	for i, a := range cmd {
		for _, f := range []string{"-ngl", "--n-gpu-layers", "--gpu-layers"} {
			if a == f && i+1 < len(cmd) {
				return cmd[i+1]
			}
			if v, ok := strings.CutPrefix(a, f+"="); ok {
				return v
			}
		}
	}
	return ""
}

// AsksGPULayers reports whether in asks for layers on a GPU: n_gpu_layers
// other than 0, or gpu_ids naming GPUs, and gpu_ids not "none". An
// instance that asks for the CPU (gpu_ids "none", n_gpu_layers 0) is not
// told that llama-server found no usable GPU.
func AsksGPULayers(in config.Instance) bool {
	ngl := gpuLayers(in.Cmd)
	ids := ""
	if in.GPUIDs != nil {
		ids = *in.GPUIDs
	}
	return ids != "none" && ngl != "0" && (ngl != "" || ids != "")
}

// devices compares the devices llama-server sees with what the instance
// asks for: GPUs through gpu_ids, or layers on a GPU through n_gpu_layers.
func devices(ctx context.Context, in config.Instance, exe string, env []string) []Finding {
	ngl := gpuLayers(in.Cmd)
	ids := ""
	if in.GPUIDs != nil {
		ids = *in.GPUIDs
	}
	if ids == "none" || ids == "" && (ngl == "" || ngl == "0") {
		return nil // asks for no GPU
	}
	ds, err := ListDevices(ctx, exe, env)
	if err != nil {
		return []Finding{{Instance: in.Name, File: exe, Problem: fmt.Sprintf("cannot tell which devices it sees: %v", err),
			Consequence: fmt.Sprintf("instance %s may run on the CPU", in.Name)}}
	}
	var asks []string
	if ids != "" {
		asks = append(asks, "gpu_ids "+ids)
	}
	if ngl != "" {
		asks = append(asks, "n_gpu_layers "+ngl)
	}
	seen := "none"
	if len(ds) > 0 {
		var names []string
		for _, d := range ds {
			names = append(names, d.Name)
		}
		seen = strings.Join(names, ", ")
	}
	switch want := len(strings.Split(ids, ",")); {
	case len(ds) == 0:
		return []Finding{{Instance: in.Name, File: exe, Problem: "--list-devices shows no GPU under the instance's environment" + visible(env),
			Consequence: fmt.Sprintf("instance %s asks for %s and would run on the CPU", in.Name, strings.Join(asks, ", "))}}
	case ids != "" && ids != "all" && want > len(ds):
		return []Finding{{Instance: in.Name, File: exe, Problem: fmt.Sprintf("--list-devices shows %d device(s) (%s) under the instance's environment%s", len(ds), seen, visible(env)),
			Consequence: fmt.Sprintf("instance %s asks for gpu_ids %s (%d GPUs) and gets fewer", in.Name, ids, want)}}
	}
	return nil
}

func visible(env []string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "CUDA_VISIBLE_DEVICES="); ok {
			return fmt.Sprintf(" (CUDA_VISIBLE_DEVICES=%q)", v)
		}
	}
	return ""
}
