package control

import (
	"bufio"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/supervise/supervisetest"
)

// When SQUAT_SOCKET is set, the test binary plays an unprivileged user who
// bound the supervisor's socket name first: it answers every request with
// 200 and an empty status, as a harvesting fake would.
func init() {
	if sw := os.Getenv("SWAP_SOCKET"); sw != "" {
		swapSocket(sw)
	}
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

// swapSocket plays uid 1000 owning the app dir: "SOCK:TARGET" swaps the
// socket, whenever one is bound at SOCK, for a link to TARGET and back,
// until killed.
func swapSocket(arg string) {
	sock, target, _ := strings.Cut(arg, ":")
	println("swapping")
	for {
		var st syscall.Stat_t
		if syscall.Lstat(sock, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
			continue
		}
		if os.Rename(sock, sock+".swap") != nil {
			continue
		}
		os.Symlink(target, sock)
		for range 1000 {
			syscall.Getpid() // hold the link a moment
		}
		os.Remove(sock)
		os.Rename(sock+".swap", sock)
	}
}

// TestSocketModeNeverThroughALink: the socket was made 0600 by its name
// right after the bind; uid 1000, owning the app dir, swaps it for a link
// to a root-only file in that instant, over 300 listens: the file's mode
// never changes (chmod goes through an O_PATH|O_NOFOLLOW descriptor of the
// socket itself).
func TestSocketModeNeverThroughALink(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test needs root (CI runs as root) to act as another user")
	}
	base := t.TempDir()
	os.Chmod(base, 0o755)
	os.Chmod(filepath.Dir(base), 0o755)
	target := filepath.Join(base, "root-file")
	os.WriteFile(target, []byte("root's\n"), 0o644)
	app := filepath.Join(base, "app")
	os.Mkdir(app, 0o755)
	os.Chown(app, 1000, 1000)
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "swapper")
	os.WriteFile(bin, self, 0o755)
	sock := SocketPath(app)
	sw := exec.Command(bin, "-test.run=^$")
	sw.Env = append(os.Environ(), "SWAP_SOCKET="+sock+":"+target)
	sw.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000, Groups: []uint32{}}}
	stderr, _ := sw.StderrPipe()
	if err := sw.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sw.Process.Kill(); sw.Wait() }()
	if line, _ := bufio.NewReader(stderr).ReadString('\n'); !strings.Contains(line, "swapping") {
		t.Fatalf("swapper did not start: %q", line)
	}
	h := supervisetest.New(t)
	failed := 0
	for range 300 {
		s := &Server{Sup: h.Sup, Info: func() SupervisorInfo { return SupervisorInfo{} }, Bundle: func() any { return nil }}
		if err := s.Listen(sock); err != nil {
			failed++
		}
		s.Close()
		if fi, err := os.Stat(target); err != nil || fi.Mode().Perm() != 0o644 {
			t.Fatalf("root's file changed through the swapped link: %v %v", fi, err)
		}
	}
	t.Logf("%d of 300 listens refused under the swapper", failed)
}

// TestSquattedSocketIsRefused: where others can create names in the app
// dir (here sticky and world-writable, as /tmp is), another user may bind
// the socket's name first. The client refuses a server that is neither
// root nor us; the supervisor (root) removes the stale name and binds its
// own, which its clients then reach.
func TestSquattedSocketIsRefused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test needs root (CI runs as root) to act as another user")
	}
	app := t.TempDir()
	if err := os.Chmod(filepath.Dir(app), 0o755); err != nil { // t.TempDir's parent is 0700
		t.Fatal(err)
	}
	if err := os.Chmod(app, 0o1777); err != nil {
		t.Fatal(err)
	}
	sock := SocketPath(app)
	// The test binary sits in a root-only build dir; uid 1000 runs a copy.
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(app, "squatter")
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

	h := supervisetest.New(t)
	s := &Server{Sup: h.Sup, Info: func() SupervisorInfo { return SupervisorInfo{PID: 42} }, Bundle: func() any { return nil }}
	if err := s.Listen(sock); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st, err := GetStatus(sock); err != nil || st.Supervisor == nil || st.Supervisor.PID != 42 {
		t.Errorf("status once the supervisor listens: %+v %v", st.Supervisor, err)
	}
}

// TestLongAppDirSocket: an app dir too long for a socket address keeps its
// socket in the app dir, bound and reached through a descriptor of the dir
// (there was a fallback dir under the temp dir, which another user could
// make first, leaving the supervisor with no socket). Nothing is made
// outside the app dir; the socket is 0600 and gone after Close.
func TestLongAppDirSocket(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	app := filepath.Join(t.TempDir(), strings.Repeat("deep/", 30), "app")
	if err := os.MkdirAll(app, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := SocketPath(app)
	if sock != filepath.Join(app, ".llamaboot.sock") || len(sock) <= maxSockAddr {
		t.Fatalf("socket %s (%d bytes): want it in the app dir, longer than an address holds", sock, len(sock))
	}
	if _, err := GetStatus(sock); !errors.Is(err, ErrNoSupervisor) {
		t.Errorf("before it listens: %v", err)
	}
	h := supervisetest.New(t)
	s := &Server{Sup: h.Sup, Info: func() SupervisorInfo { return SupervisorInfo{PID: 42} }, Bundle: func() any { return nil }}
	if err := s.Listen(sock); err != nil {
		t.Fatal(err)
	}
	if st, err := GetStatus(sock); err != nil || st.Supervisor == nil || st.Supervisor.PID != 42 {
		t.Errorf("status: %+v %v", st.Supervisor, err)
	}
	if fi, err := os.Lstat(sock); err != nil || fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %v %v, want a 0600 socket", fi, err)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("made in the temp dir: %v", left)
	}
	s.Close()
	if _, err := os.Lstat(sock); err == nil {
		t.Error("the socket was left after Close")
	}
}

// TestSocketNameTakenIsNamed: something not a socket at the socket's name
// (a dir uid 1000 made there) is left alone, and the supervisor's error
// names it and its owner.
func TestSocketNameTakenIsNamed(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test needs root (CI runs as root) to make uid 1000's dir")
	}
	app := t.TempDir()
	sock := SocketPath(app)
	os.Mkdir(sock, 0o755)
	os.Chown(sock, 1000, 1000)
	s := &Server{}
	err := s.Listen(sock)
	if err == nil {
		s.Close()
		t.Fatal("listened over a dir at the socket's name")
	}
	if want := sock + " is there already, owned by uid 1000"; !strings.Contains(err.Error(), want) {
		t.Errorf("want %q: %v", want, err)
	}
	if fi, err := os.Stat(sock); err != nil || !fi.IsDir() {
		t.Errorf("the dir at the name was touched: %v %v", fi, err)
	}
}
