package main

import (
	"debug/elf"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Every command pays the package init of everything linked, `version`,
// `healthcheck` (run every few seconds by Docker) and a second boot's
// install (nothing to do) included: what only the metrics endpoint or a
// registry pull needs must not be among it. The built binary's own init
// trace says what runs.
func TestStartupInitsNoMetricsLibraries(t *testing.T) {
	checkStartupInits(t, []string{"prometheus", "protobuf", "procfs", "expvar"})
}

// The registry client is llamaboot's own (internal/image/client.go):
// go-containerregistry's name, remote and authn packages cost every command
// 0.25-0.4 ms of init, nearly all of it go-digest's five and name's three
// package-level regexps, which every one of its registry packages imports
// (figures per package and per command in the README's "Start-up").
func TestStartupInitsNoRegistryLibraries(t *testing.T) {
	checkStartupInits(t, []string{
		"go-containerregistry/pkg/name", "go-containerregistry/pkg/v1/remote", "go-containerregistry/pkg/authn",
		"go-containerregistry/internal", "go-digest", "image-spec", "docker/cli", "logrus",
	})
}

// A call of reflect's Method or MethodByName with a name not known at
// link time (text/template's, reached through cobra's SetVersionTemplate)
// makes the linker keep every exported method of every type: 2.3 MB more
// binary that every command pages in. Their symbols in the built binary say
// whether one is reachable.
func TestStartupBinaryKeepsMethodPruning(t *testing.T) {
	f, err := elf.Open(llamaboot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatalf("%s has no symbol table: %v", llamaboot, err)
	}
	seen := 0
	for _, s := range syms {
		switch s.Name {
		case "reflect.Value.MethodByName", "reflect.Value.Method", "reflect.(*rtype).MethodByName", "reflect.(*rtype).Method":
			t.Errorf("%s is linked: a reflective method call keeps every exported method", s.Name)
		case "reflect.Value.Call", "reflect.Value.Interface":
			seen++
		}
	}
	if seen == 0 {
		t.Fatalf("%s: no reflect symbols at all; the check would see nothing", llamaboot)
	}
}

func checkStartupInits(t *testing.T, heavy []string) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	pkg := releaseArchive(t, dir, "llama-b7123-bin-ubuntu-x64.tar.gz", "b7123")
	if r := runLB(t, cleanEnv(), "install", "-q", "--app-dir", app, pkg); r.code != 0 {
		t.Fatalf("first install: %v", r)
	}
	for _, args := range [][]string{
		{"version"},
		{"healthcheck", "--app-dir", t.TempDir()},
		{"install", "--app-dir", app, pkg},
	} {
		cmd := exec.Command(llamaboot, args...)
		cmd.Env = cleanEnv("GODEBUG=inittrace=1")
		out, _ := cmd.CombinedOutput()
		inits := strings.Count(string(out), "\ninit ")
		if inits < 10 {
			t.Fatalf("no init trace from %v:\n%s", args, out)
		}
		if args[0] == "install" && !strings.Contains(string(out), "already installed") {
			t.Fatalf("the second install did something:\n%s", out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			for _, h := range heavy {
				if strings.HasPrefix(line, "init ") && strings.Contains(line, h) {
					t.Errorf("%v initialises %s: %s", args, h, line)
				}
			}
		}
	}
}
