package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestListenFloodLeavesPID1Working: 2000 idle connections from one client
// to --listen, against an entry limited to 300 descriptors, once exhausted
// them: the control socket died and a restarted instance could not start
// ("pipe2: too many open files"). Now the endpoint keeps a few per peer
// and closes the rest: entry's descriptors stay bounded, status answers,
// another peer's /readyz is served, and a restart starts the instance.
func TestListenFloodLeavesPID1Working(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	cfg, _ := watchConfig(t, dir, "", "", "a")
	listen := freePorts(t, 1)[0]
	addr := fmt.Sprintf("127.0.0.1:%d", listen)
	e := startEntryWrapped(t, []string{"prlimit", "--nofile=300:300"}, app,
		[]string{"AUTO_INFER_LLAMA_CPP_ON_BOOT=1", "AUTO_INFER_LLAMA_CPP_CONFIG=" + cfg, "STANDIN_LOAD_MS=50", "AUTO_INFER_LLAMA_CPP_METRICS_ADDR=" + addr})
	e.waitOutput(t, `a ready after`, 20*time.Second)

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 2000 {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			continue // reset or refused: the endpoint is shedding
		}
		conns = append(conns, c)
	}
	time.Sleep(500 * time.Millisecond)
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", e.cmd.Process.Pid))
	if len(fds) > 120 {
		t.Errorf("entry holds %d descriptors under the flood", len(fds))
	}
	if r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "status"); r.code != 0 || !strings.Contains(r.stdout, "a") {
		t.Errorf("status under the flood: %v", r)
	}
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://" + addr + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("/readyz from another peer under the flood: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if r := runLB(t, []string{"AUTO_INFER_APP_DIR=" + app}, "restart", "a"); r.code != 0 {
		t.Errorf("restart under the flood: %v", r)
	}
	if got := strings.Count(e.waitOutput(t, `(?s)a ready after.*a ready after`, 20*time.Second)[0], "ready after"); got < 2 {
		t.Errorf("a did not start again: %s", e.out.String())
	}
	t.Logf("entry held %d descriptors with %s of 2000 flood connections open at the client", len(fds), strconv.Itoa(len(conns)))
}
