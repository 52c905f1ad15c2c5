package supervise

import (
	"bufio"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/llamaboot/llamaboot/internal/config"
)

// When SQUAT_SOCKET is set, the test binary plays an unprivileged user who
// bound the supervisor's socket name first: it answers every request with
// 200 and an empty status, as a harvesting fake would.
func init() {
	sock := os.Getenv("SQUAT_SOCKET")
	if sock == "" {
		return
	}
	os.MkdirAll(filepath.Dir(sock), 0o777)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		println("squat:", err.Error())
		os.Exit(3)
	}
	os.Chmod(sock, 0o777)
	println("squatting")
	http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`{"instances":[]}`)) }))
	os.Exit(0)
}

// TestSquattedSocketIsRefused: with an app dir path too long for a socket
// address, the socket lives under the temp dir. Another user who binds that
// name first must get nothing: the client refuses a server that is neither
// root nor us, and the supervisor refuses a socket dir it does not own.
func TestSquattedSocketIsRefused(t *testing.T) {
	tmp := t.TempDir()
	if err := os.Chmod(filepath.Dir(tmp), 0o755); err != nil { // t.TempDir's parent is 0700
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, 0o1777); err != nil { // as /tmp is
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", tmp)
	// Where /run is not root's alone, root falls back to the temp dir too.
	defer func(d string) { runDir = d }(runDir)
	runDir = tmp
	app := filepath.Join("/soft", strings.Repeat("deep/", 25), "app")
	sock := SocketPath(app)
	if !strings.HasPrefix(sock, filepath.Join(tmp, "llamaboot-0")+"/") {
		t.Fatalf("socket for a long app dir is %s, want it in the user's private dir under %s", sock, tmp)
	}

	// The test binary sits in a root-only build dir; uid 1000 runs a copy.
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(tmp, "squatter")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	squatter := exec.Command(bin, "-test.run=^$")
	squatter.Env = append(os.Environ(), "SQUAT_SOCKET="+sock)
	squatter.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000, Groups: []uint32{}}}
	stderr, _ := squatter.StderrPipe()
	if err := squatter.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { squatter.Process.Kill(); squatter.Wait() }()
	if line, _ := bufio.NewReader(stderr).ReadString('\n'); !strings.Contains(line, "squatting") {
		t.Fatalf("squatter did not start: %q", line)
	}

	_, err = GetStatus(sock)
	if err == nil || !strings.Contains(err.Error(), "served by uid 1000") || !strings.Contains(err.Error(), "neither root nor you") {
		t.Errorf("status through a squatted socket: %v", err)
	}
	if _, err := Adopt(sock, &config.Plan{}, false, false); err == nil {
		t.Error("a plan was handed to the squatter")
	}

	s := &Server{}
	err = s.Listen(sock)
	if err == nil {
		s.Close()
		t.Fatal("the supervisor listened in a socket dir another user made")
	}
	if !strings.Contains(err.Error(), "not a private directory of uid 0") {
		t.Errorf("listen: %v", err)
	}
}

// TestRootSocketDirOnlyRootCanMake: root's socket for a long app dir lives
// in /run (here a stand-in root-only dir), where another user cannot make
// the dir first: its squat in the temp dir changes nothing, the supervisor
// listens and its clients reach it.
func TestRootSocketDirOnlyRootCanMake(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test needs root (CI runs as root)")
	}
	run := t.TempDir()
	os.Chmod(filepath.Dir(run), 0o755)
	os.Chmod(run, 0o755)
	defer func(d string) { runDir = d }(runDir)
	runDir = run
	tmp := t.TempDir()
	os.Chmod(tmp, 0o1777)
	t.Setenv("TMPDIR", tmp)
	// uid 1000 made the temp dir's name first.
	squat := filepath.Join(tmp, "llamaboot-0")
	os.Mkdir(squat, 0o777)
	os.Chown(squat, 1000, 1000)

	app := filepath.Join("/soft", strings.Repeat("deep/", 25), "app")
	sock := SocketPath(app)
	if !strings.HasPrefix(sock, filepath.Join(run, "llamaboot-0")+"/") {
		t.Fatalf("root's socket for a long app dir is %s, want it under %s", sock, run)
	}
	h := newHarness(t)
	s := &Server{Sup: h.sup, Info: func() SupervisorInfo { return SupervisorInfo{PID: 42} }, Bundle: func() any { return nil }}
	if err := s.Listen(sock); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := GetStatus(sock); err != nil {
		t.Errorf("status: %v", err)
	}
	if fi, err := os.Stat(filepath.Dir(sock)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("socket dir %v %v, want 0700", fi, err)
	}
	// Where /run is writable by others, it is not used.
	os.Chmod(run, 0o777)
	if strings.HasPrefix(SocketPath(app), run) {
		t.Error("a /run others can write in was used")
	}
}
