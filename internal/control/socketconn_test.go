package control

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/llamaboot/llamaboot/internal/supervise/supervisetest"
)

// dialAs connects to the unix socket at path with uid as the connecting
// thread's effective uid, so SO_PEERCRED reports that uid. The thread is
// locked and never unlocked: it ends with the goroutine, taking the
// changed credentials with it.
func dialAs(t *testing.T, path string, uid int) net.Conn {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
			ch <- res{nil, e}
			return
		}
		c, err := net.Dial("unix", path)
		ch <- res{c, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.c.Close() })
	return r.c
}

// serverClosed reports whether the server closed c within wait.
func serverClosed(r *bufio.Reader, c net.Conn, wait time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(wait))
	_, err := r.ReadByte()
	return errors.Is(err, io.EOF)
}

// TestSocketClosesRefusedAndIdleConnections: a connection from a uid the
// socket refuses gets its "permission denied" and is closed with it (it
// once stayed open, kept alive, holding a descriptor of PID 1); an allowed
// client's kept-alive connection left idle is closed after IdleTimeout.
func TestSocketClosesRefusedAndIdleConnections(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (CI runs as root) to connect as uid 1000")
	}
	h := supervisetest.New(t)
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	sock := filepath.Join(dir, "s.sock")
	srv := &Server{Sup: h.Sup, Info: func() SupervisorInfo { return SupervisorInfo{PID: 42, Socket: sock} },
		Bundle: func() any { return nil }, IdleTimeout: 300 * time.Millisecond}
	if err := srv.Listen(sock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	os.Chmod(sock, 0o666) // reachable: the uid check alone must refuse

	for _, c := range []struct {
		uid     int
		status  int
		closeIn time.Duration
	}{{1000, http.StatusForbidden, time.Second}, {0, http.StatusOK, 5 * time.Second}} {
		conn := dialAs(t, sock, c.uid)
		fmt.Fprintf(conn, "GET /status HTTP/1.1\r\nHost: llamaboot\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("uid %d: %v", c.uid, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("uid %d: %s, want %d", c.uid, resp.Status, c.status)
		}
		if !serverClosed(br, conn, c.closeIn) {
			t.Errorf("uid %d: connection still open %s after the answer", c.uid, c.closeIn)
		}
	}
}
