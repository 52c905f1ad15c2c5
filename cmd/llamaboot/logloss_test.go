package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLogLossOnAFullDisk: a server keeps printing into a log dir that fills
// up. entry says when the loss starts and when it stops (with how many
// lines and bytes), the log holds only whole lines with the note on a line
// of its own, and /metrics counts the lost lines.
func TestLogLossOnAFullDisk(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	logs := filepath.Join(dir, "logs")
	must(t, os.MkdirAll(logs, 0o755))
	if err := syscall.Mount("tmpfs", logs, "tmpfs", 0, "size=512k"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	defer syscall.Unmount(logs, syscall.MNT_DETACH)
	filler := filepath.Join(logs, "filler")
	must(t, os.WriteFile(filler, make([]byte, 256<<10), 0o644))

	cfg, _ := instanceConfig(t, dir, "talky")
	app := filepath.Join(dir, "app")
	listen := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	e := startEntry(t, app, []string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg,
		"STANDIN_LINES=-1", "STANDIN_LINE_US=200"}, "--listen", listen)
	logPath := filepath.Join(logs, "llama-server-talky.log")
	e.waitOutput(t, `talky: writing its log `+regexp.QuoteMeta(logPath)+` failed \(write .*no space left on device\): its output is lost until writing works again`, 30*time.Second)
	must(t, os.Remove(filler))
	m := e.waitOutput(t, `talky: writing its log `+regexp.QuoteMeta(logPath)+` works again; (\d+) lines \((\d+) bytes\) of output were lost`, 30*time.Second)
	lines, _ := strconv.Atoi(m[1])
	bytes, _ := strconv.Atoi(m[2])
	if lines == 0 || bytes != lines*101 {
		t.Errorf("lost %d lines, %d bytes: want whole 101-byte lines", lines, bytes)
	}

	resp, err := http.Get("http://" + listen + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	got := regexp.MustCompile(`(?m)^llamaboot_log_lines_lost_total\{instance="talky"\} (\d+)$`).FindSubmatch(body)
	if got == nil {
		t.Fatalf("no llamaboot_log_lines_lost_total in /metrics:\n%s", body)
	}
	if n, _ := strconv.Atoi(string(got[1])); n < lines {
		t.Errorf("llamaboot_log_lines_lost_total = %d, want at least the %d said", n, lines)
	}

	e.cmd.Process.Signal(syscall.SIGTERM)
	e.wait(t, 20*time.Second)
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	whole := regexp.MustCompile(`^(STANDIN_LINE \d{8} x{78}|\[llamaboot\] .*|STANDIN_[A-Z_]+ .*|standin-llama-server: .*|[IW] srv .*)$`)
	notes := 0
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if !whole.MatchString(l) {
			t.Errorf("a line cut or glued in the log: %.120q", l)
			break
		}
		if strings.HasPrefix(l, "[llamaboot] ") && strings.Contains(l, "of output were lost here") {
			notes++
		}
	}
	if notes == 0 {
		t.Error("the log does not say what was lost")
	}
}
