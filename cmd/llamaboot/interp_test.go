package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/launch"
)

// TestMissingInterpreterIsSaid starts an instance whose llama-server is a
// dynamic executable naming a program interpreter that is not there (as
// in a FROM scratch container): exec says "no such file or directory",
// and status and healthcheck must say the interpreter is what is missing,
// not the file, which exists.
func TestMissingInterpreterIsSaid(t *testing.T) {
	dir := t.TempDir()
	real, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	interp := launch.Interpreter("/bin/true")
	if interp == "" || !bytes.Contains(real, []byte(interp+"\x00")) {
		t.Fatalf("/bin/true names no program interpreter (%q): this test needs a dynamic executable", interp)
	}
	// The same length, so the ELF header's sizes stay right.
	gone := filepath.Dir(interp) + "/" + strings.Repeat("z", len(filepath.Base(interp)))
	exe := filepath.Join(dir, "llama-server")
	if err := os.WriteFile(exe, bytes.Replace(real, []byte(interp+"\x00"), []byte(gone+"\x00"), 1), 0o755); err != nil {
		t.Fatal(err)
	}
	port := freePorts(t, 1)[0]
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[master]\nllama_cpp_path = %q\n[instance.control]\nlog_dir = %q\n[instance.a.server]\nhost = \"127.0.0.1\"\nport = %d\n",
		exe, filepath.Join(dir, "logs"), port))
	e := startEntry(t, filepath.Join(dir, "app"), []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg})
	want := exe + " exists, but its program interpreter " + gone + " is not in this container (a FROM scratch image needs the C libraries: see README)"
	waitFor(t, "a start failure in status", 30*time.Second, func() bool {
		st := e.status(t)
		return len(st.Instances) > 0 && st.Instances[0].Error != ""
	})
	if in := e.status(t).Instances[0]; !strings.Contains(in.Error, want) || strings.Contains(in.Error, "no such file") {
		t.Errorf("status error %q, want it to contain %q", in.Error, want)
	}
	appEnv := []string{"AUTO_INFER_APP_DIR=" + e.app}
	r := runLB(t, appEnv, "status")
	if !strings.Contains(r.stdout, want) {
		t.Errorf("status text does not say the interpreter is missing:\n%s", r)
	}
	// So long a reason does not push the table's LOG column out of line:
	// it is said under the row.
	lines := strings.Split(r.stdout, "\n")
	head, row := -1, -1
	for i, l := range lines {
		if strings.HasPrefix(l, "INSTANCE ") {
			head = i
		}
		if strings.HasPrefix(l, "a ") {
			row = i
		}
	}
	if head < 0 || row < 0 {
		t.Fatalf("no table header or row a:\n%s", r.stdout)
	}
	if col, at := strings.Index(lines[head], " LOG"), strings.Index(lines[row], " "+filepath.Join(dir, "logs")); col < 0 || col != at {
		t.Errorf("row a's log at column %d, the LOG header at %d:\n%s", at, col, r.stdout)
	}
	if r := runLB(t, appEnv, "healthcheck"); r.code == 0 || !strings.Contains(r.stdout+r.stderr, want) {
		t.Errorf("healthcheck does not say the interpreter is missing:\n%s", r)
	}
}
