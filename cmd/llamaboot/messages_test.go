package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	ctl "github.com/llamaboot/llamaboot/internal/control"
	"github.com/llamaboot/llamaboot/internal/testutil"
)

// What a person reads: lists joined with commas, no Go slices or quoting,
// one cause per error, dashes for what is absent, --version.
func TestMessagesAPersonReads(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	env := []string{"AUTO_INFER_APP_DIR=" + app}

	// --version (and -v) prints what version prints; with --help, or
	// without either, the root command shows its help.
	v := runLB(t, env, "version")
	for _, flag := range []string{"--version", "-v"} {
		if vv := runLB(t, env, flag); vv.code != 0 || vv.stdout != v.stdout || !strings.HasPrefix(vv.stdout, "llamaboot ") {
			t.Errorf("%s:\n%v\nversion:\n%v", flag, vv, v)
		}
	}
	for _, args := range [][]string{{"--version", "--help"}, {}} {
		if h := runLB(t, env, args...); h.code != 0 || !strings.Contains(h.stdout, "Usage:") || !strings.Contains(h.stdout, "-v, --version   version for llamaboot") {
			t.Errorf("llamaboot %s:\n%v", strings.Join(args, " "), h)
		}
	}

	cfg, _ := instanceConfig(t, dir, "chat", "embed")
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=50"})
	e.waitReady(t, "chat", "embed")

	r := runLB(t, env, "logs", "nope")
	if r.code != 2 || !strings.Contains(r.stderr, `no instance "nope" is supervised (instances: chat, embed)`) {
		t.Errorf("logs nope:\n%v", r)
	}

	// The log header shows the command line as a shell would take it.
	log, _ := os.ReadFile(filepath.Join(dir, "logs", "llama-server-chat.log"))
	if !regexp.MustCompile(`(?m)^\[llamaboot\] \S+ starting \S+llama-server --host 127\.0\.0\.1 --port \d+$`).Match(log) {
		t.Errorf("log header:\n%s", log)
	}

	// A ready instance after a restart: its LAST EXIT is history in the
	// table, kept in --json; a stopped one has no pid and no uptime.
	if r := runLB(t, env, "restart", "chat"); r.code != 0 {
		t.Fatal(r)
	}
	if r := runLB(t, env, "stop", "embed"); r.code != 0 {
		t.Fatal(r)
	}
	r = runLB(t, env, "status")
	chat := regexp.MustCompile(`(?m)^chat\s+ready\s+\d+\s+\d+\s+\d+\s+\d+s\s+-\s+/`)
	embed := regexp.MustCompile(`(?m)^embed\s+stopped\s+-\s+\d+\s+\d+\s+-\s+exit code 0 \(stop requested\)`)
	if !chat.MatchString(r.stdout) || !embed.MatchString(r.stdout) {
		t.Errorf("status rows:\n%s", r.stdout)
	}
	var st ctl.Status
	r = runLB(t, env, "status", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err)
	}
	if in := byName(st)["chat"]; in.LastExit == nil || in.LastReason != "restart requested" {
		t.Errorf("--json drops chat's last exit: %+v", in)
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	e.wait(t, 20*time.Second)
}

// Ctrl-C during a download: the install says it was interrupted, not
// "context canceled", and names the URL once.
func TestInterruptedInstallSaysSo(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hold := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "nope.gguf") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", "1000000")
		w.Header().Set("ETag", `"x"`)
		w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
		<-hold
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { close(hold); srv.Close() })
	url := fmt.Sprintf("http://%s/llama-b1-bin-ubuntu-x64.tar.gz", ln.Addr())

	dir := t.TempDir()
	cmd := exec.Command(llamaboot, "install", "--app-dir", filepath.Join(dir, "app"), url)
	cmd.Env = cleanEnv()
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the download to start", 10*time.Second, func() bool { return strings.Contains(out.String(), "downloading") })
	time.Sleep(200 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	if s := out.String(); strings.Contains(s, "context canceled") || !strings.Contains(s, "stopped: interrupt signal received") {
		t.Errorf("Ctrl-C during a download:\n%s", s)
	}

	// A model URL that answers 404: the URL said once.
	model := fmt.Sprintf("http://%s/nope.gguf", ln.Addr())
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[instance.a.server]\nport = 1\nmodel = %q\n", model))
	r := runLB(t, nil, "fetch-models", "--app-dir", filepath.Join(dir, "app"), "--config", cfg)
	if r.code != 2 || !strings.Contains(r.stderr, "model "+model+": HTTP 404 Not Found") || strings.Count(r.stderr, model) != 1 {
		t.Errorf("404 model:\n%v", r)
	}
}
