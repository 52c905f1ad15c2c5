// Package kubernetes holds the example manifests in this directory and the
// test that keeps them deployable: every document decodes strictly into the
// Kubernetes API types, every probe and command runs a llamaboot command
// that exists, and the ConfigMap's TOML validates.
package kubernetes

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/llamaboot/llamaboot/internal/config"
)

// decoders name the API type each kind must decode into; a kind not listed
// is an error, so a new manifest gets a strict check too.
var decoders = map[string]func() any{
	"Deployment":            func() any { return &appsv1.Deployment{} },
	"Service":               func() any { return &corev1.Service{} },
	"ConfigMap":             func() any { return &corev1.ConfigMap{} },
	"PersistentVolumeClaim": func() any { return &corev1.PersistentVolumeClaim{} },
}

func documents(t *testing.T) map[string][]any {
	t.Helper()
	files, _ := filepath.Glob("*.yaml")
	if len(files) < 4 {
		t.Fatalf("found %d manifests, want deployment, service, configmap and pvc", len(files))
	}
	objs := map[string][]any{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(data, []byte("\n---\n")) {
			var head struct{ APIVersion, Kind string }
			if err := yaml.Unmarshal(doc, &head); err != nil || head.Kind == "" {
				t.Fatalf("%s document %d: no kind (%v)", f, i+1, err)
			}
			newObj, ok := decoders[head.Kind]
			if !ok {
				t.Fatalf("%s document %d: kind %s has no strict decoder in this test", f, i+1, head.Kind)
			}
			obj := newObj()
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Fatalf("%s document %d (%s): %v", f, i+1, head.Kind, err)
			}
			objs[head.Kind] = append(objs[head.Kind], obj)
		}
	}
	return objs
}

func TestManifestsDecodeStrictly(t *testing.T) {
	objs := documents(t)
	for _, kind := range []string{"Deployment", "Service", "ConfigMap", "PersistentVolumeClaim"} {
		if len(objs[kind]) == 0 {
			t.Errorf("no %s among the manifests", kind)
		}
	}
}

// TestProbesRunRealCommands builds llamaboot and runs every exec probe's and
// every container command's llamaboot subcommand with --help: a probe naming
// a command or flag the binary lacks would fail on a real cluster forever.
func TestProbesRunRealCommands(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "llamaboot")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/llamaboot")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build llamaboot: %v\n%s", err, out)
	}
	d := documents(t)["Deployment"][0].(*appsv1.Deployment)
	spec := d.Spec.Template.Spec
	var commands [][]string
	probes := 0
	for _, c := range append(spec.InitContainers, spec.Containers...) {
		if len(c.Command) > 0 {
			commands = append(commands, c.Command)
		}
		for _, p := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
			if p == nil {
				continue
			}
			if p.Exec == nil {
				t.Errorf("container %s: a probe is not an exec probe of llamaboot", c.Name)
				continue
			}
			probes++
			commands = append(commands, p.Exec.Command)
		}
	}
	if probes != 3 {
		t.Errorf("%d probes, want startup, readiness and liveness", probes)
	}
	for _, cmd := range commands {
		if cmd[0] != "/usr/local/bin/llamaboot" {
			t.Errorf("%q does not run the llamaboot the image installs", cmd)
			continue
		}
		// Flags are checked by cobra before --help is honoured: an unknown
		// flag fails here as it would in the probe.
		args := append(append([]string{}, cmd[1:]...), "--help")
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Usage:") || !strings.Contains(string(out), "llamaboot "+cmd[1]) {
			t.Errorf("%q: %v\n%s", cmd, err, out)
		}
	}
	if spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds < 15 {
		t.Error("terminationGracePeriodSeconds must leave room for the drain and the servers' grace")
	}
}

// TestEnvironmentIsDocumented keeps the manifests to variables llamaboot
// reads: every AUTO_INFER_* name must be in the README's reference.
func TestEnvironmentIsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	d := documents(t)["Deployment"][0].(*appsv1.Deployment)
	for _, c := range append(d.Spec.Template.Spec.InitContainers, d.Spec.Template.Spec.Containers...) {
		for _, e := range c.Env {
			if !regexp.MustCompile("`" + e.Name + "`").Match(readme) {
				t.Errorf("container %s sets %s, which the README does not document", c.Name, e.Name)
			}
		}
	}
}

func TestConfigMapValidates(t *testing.T) {
	cm := documents(t)["ConfigMap"][0].(*corev1.ConfigMap)
	toml, ok := cm.Data["llama.toml"]
	if !ok {
		t.Fatal("the ConfigMap has no llama.toml")
	}
	plan, err := config.Parse("configmap.yaml:llama.toml", []byte(toml), config.Options{
		AppDir: t.TempDir(), Exists: func(string) bool { return true },
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Instances) == 0 {
		t.Error("the ConfigMap plans no instance")
	}
}
