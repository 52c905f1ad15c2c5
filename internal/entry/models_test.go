package entry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/control"
	"github.com/llamaboot/llamaboot/internal/fetch"
	"github.com/llamaboot/llamaboot/internal/models"
)

// heldServer serves /m.gguf (half of it, then the rest once released) and
// 404 for anything else.
func heldServer(t *testing.T, body []byte) (*httptest.Server, chan struct{}) {
	release, gone := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/m.gguf" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", `"m"`)
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		select {
		case <-release:
			w.Write(body[len(body)/2:])
		case <-r.Context().Done():
		case <-gone:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(gone) }) // runs first: no handler holds up Close
	return srv, release
}

func modelOptions(t *testing.T, app, cfg string, strict bool) Options {
	return Options{AppDir: app, ServeOnBoot: true, ConfigPath: cfg, Strict: strict, Grace: time.Second,
		Config: config.Options{AppDir: app, ModelsDir: filepath.Join(app, "models")},
		Models: models.Options{Download: fetch.Options{Retries: 0, StallTimeout: time.Hour}}}
}

func modelConfig(t *testing.T, srv string) string {
	return writeConfig(t, fmt.Sprintf(`[master]
llama_cpp_path = "/bin/true"
[instance.control]
log_dir = %q
[instance.a.server]
port = 18011
model = "%s/m.gguf"
[instance.c.server]
port = 18012
model = "%s/missing.gguf"
[instance.d.server]
port = 18013
`, t.TempDir(), srv, srv))
}

type bootStatus struct {
	Instances []control.InstanceStatus `json:"instances"`
	Downloads []models.Download        `json:"downloads"`
}

func getStatus(t *testing.T, app string) bootStatus {
	st, err := control.GetStatus(control.SocketPath(app))
	if err != nil {
		return bootStatus{}
	}
	var out bootStatus
	b, _ := json.Marshal(st)
	json.Unmarshal(b, &out)
	return out
}

func stateOf(st bootStatus, name string) control.InstanceStatus {
	for _, in := range st.Instances {
		if in.Name == name {
			return in
		}
	}
	return control.InstanceStatus{}
}

func TestModelsOnBoot(t *testing.T) {
	body := bytes.Repeat([]byte("GGUF"), 50_000)
	srv, release := heldServer(t, body)
	app := t.TempDir()
	o := modelOptions(t, app, modelConfig(t, srv.URL), false)
	o.Listen = "127.0.0.1:0"
	b := start(t, o)
	var st bootStatus
	deadline := time.Now().Add(10 * time.Second)
	for {
		st = getStatus(t, app)
		if stateOf(st, "a").State == "downloading" && stateOf(st, "c").State == "failed" && stateOf(st, "d").State == "ready" &&
			len(st.Downloads) == 2 && st.Downloads[0].DoneBytes == int64(len(body)/2) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %+v\n%s", st, b.out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c := stateOf(st, "c"); !strings.Contains(c.Error, "HTTP 404") || c.Want != "up" {
		t.Errorf("c: %+v", c)
	}
	// Health: alive but not ready while downloading, through the socket
	// (llamaboot healthcheck) and /readyz.
	sock := control.SocketPath(app)
	if h, err := control.GetHealth(sock, "a", false, 5*time.Second); err != nil || h.OK || !strings.Contains(h.Summary, "a: downloading its model") {
		t.Errorf("ready check while downloading: %+v %v", h, err)
	}
	if h, err := control.GetHealth(sock, "a", true, 5*time.Second); err != nil || !h.OK {
		t.Errorf("live check while downloading: %+v %v", h, err)
	}
	addr := b.out.String()
	addr = addr[strings.Index(addr, "on http://")+len("on http://"):]
	addr = addr[:strings.IndexByte(addr, '\n')]
	resp, err := http.Get("http://" + addr + "/readyz?instance=a")
	if err != nil {
		t.Fatal(err)
	}
	body503, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body503), "downloading its model") {
		t.Errorf("/readyz while downloading: %d %s", resp.StatusCode, body503)
	}
	// A reload while a downloads does not start it early.
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	b.waitOutput(t, "reload (")
	if st := getStatus(t, app); stateOf(st, "a").State != "downloading" || stateOf(st, "a").PID != 0 {
		t.Errorf("after a reload: %+v", stateOf(st, "a"))
	}
	close(release)
	b.waitOutput(t, "a ready after")
	if h, err := control.GetHealth(sock, "a", false, 5*time.Second); err != nil || !h.OK {
		t.Errorf("ready check after the download: %+v %v", h, err)
	}
	term(t)
	if code := b.wait(t); code != 0 {
		t.Errorf("exit %d\n%s", code, b.out)
	}
}

func TestModelsOnBootStrict(t *testing.T) {
	srv, release := heldServer(t, bytes.Repeat([]byte("GGUF"), 1000))
	close(release)
	app := t.TempDir()
	b := start(t, modelOptions(t, app, modelConfig(t, srv.URL), true))
	if code := b.wait(t); code != ExitBadInput || strings.Contains(b.out.String(), "ready after") ||
		!strings.Contains(b.out.String(), "instance c: model "+srv.URL+"/missing.gguf") {
		t.Errorf("exit %d\n%s", code, b.out)
	}
}

func TestStopDuringModelDownloads(t *testing.T) {
	for _, strict := range []bool{false, true} {
		t.Run(fmt.Sprint("strict=", strict), func(t *testing.T) {
			srv, _ := heldServer(t, bytes.Repeat([]byte("GGUF"), 50_000))
			app := t.TempDir()
			b := start(t, modelOptions(t, app, modelConfig(t, srv.URL), strict))
			b.waitOutput(t, "downloading model "+srv.URL+"/m.gguf")
			part := filepath.Join(app, "models", "m.gguf.part")
			deadline := time.Now().Add(10 * time.Second)
			// Non-strict: c has failed and is said; strict: all wait.
			for (!strict && !strings.Contains(b.out.String(), "HTTP 404")) || fileSize(part) != 100_000 {
				if time.Now().After(deadline) {
					t.Fatalf("no progress:\n%s", b.out)
				}
				time.Sleep(10 * time.Millisecond)
			}
			term(t)
			want := 0
			if strict {
				want = 143
			}
			if code := b.wait(t); code != want || fileSize(part) != 100_000 {
				t.Errorf("exit %d (want %d), part %d bytes\n%s", code, want, fileSize(part), b.out)
			}
		})
	}
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// TestModelsOnBootStrictSuccess: under STRICT every model is there before
// any instance starts, then all start.
func TestModelsOnBootStrictSuccess(t *testing.T) {
	srv, release := heldServer(t, bytes.Repeat([]byte("GGUF"), 1000))
	close(release)
	app := t.TempDir()
	cfg := writeConfig(t, fmt.Sprintf("[master]\nllama_cpp_path = \"/bin/true\"\n[instance.control]\nlog_dir = %q\n[instance.a.server]\nport = 18021\nmodel = \"%s/m.gguf\"\n[instance.d.server]\nport = 18022\n", t.TempDir(), srv.URL))
	b := start(t, modelOptions(t, app, cfg, true))
	b.waitOutput(t, "a ready after")
	b.waitOutput(t, "d ready after")
	out := b.out.String()
	if strings.Index(out, "downloaded model") > strings.Index(out, "d ready after") {
		t.Errorf("an instance started before the download ended:\n%s", out)
	}
	term(t)
	if code := b.wait(t); code != 0 {
		t.Errorf("exit %d\n%s", code, b.out)
	}
}
