package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// trickleServer sends body 10 bytes every 50ms (about 200 B/s), however
// fast the client reads.
func trickleServer(t *testing.T, body []byte) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		for i := 0; i < len(body); i += 10 {
			if _, err := w.Write(body[i:min(i+10, len(body))]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestMinRateFlag: the download rate floor was fixed at 1 KiB/s per
// --stall-timeout window; --min-rate sets it. A 200 B/s server is cut off
// by the default floor (exit 1, the floor and its flag named), and served
// whole with --min-rate 20 (a tenth of its rate) or 0 (any byte will do).
func TestMinRateFlag(t *testing.T) {
	dir := t.TempDir()
	body := ggufBody(1000, 9)
	srv := trickleServer(t, body)
	cfg := writeFile(t, filepath.Join(dir, "cfg.toml"), fmt.Sprintf("[instance.a.server]\nport = 1\nmodel = %q\n", srv.URL+"/m.gguf"))
	for _, c := range []struct {
		rate string // "" for the default
		code int
		want string
	}{
		{"", 1, "(under 1.0 KiB/s, the --min-rate floor)"},
		{"20", 0, "downloaded model"},
		{"0", 0, "downloaded model"},
	} {
		models := filepath.Join(dir, "models-"+c.rate)
		args := []string{"fetch-models", "--config", cfg, "--stall-timeout", "1s", "--retries", "0"}
		if c.rate != "" {
			args = append(args, "--min-rate", c.rate)
		}
		r := runLB(t, []string{"AUTO_INFER_MODELS_DIR=" + models}, args...)
		if r.code != c.code || !strings.Contains(r.stdout+r.stderr, c.want) {
			t.Errorf("--min-rate %q: want exit %d and %q: %v", c.rate, c.code, c.want, r)
			continue
		}
		if got, _ := os.ReadFile(filepath.Join(models, "m.gguf")); c.code == 0 && string(got) != string(body) {
			t.Errorf("--min-rate %q: the model holds %d bytes, not the %d served", c.rate, len(got), len(body))
		}
	}
}
