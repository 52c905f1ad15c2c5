package launch

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/llamaboot/llamaboot/internal/config"
)

// PortTakenError is an instance whose port another process already
// listens on: starting it would only end in "address already in use",
// and a readiness probe would be answered by the other process.
type PortTakenError struct {
	Instance string
	Addr     string // host:port as the instance would bind it
	Holder   string // "pid 123 (nginx)", or "" when /proc does not tell
}

func (e *PortTakenError) Error() string {
	holder := "by a process /proc does not show (another network namespace or user?)"
	if e.Holder != "" {
		holder = "by " + e.Holder
	}
	return fmt.Sprintf("instance %q: port %s is already in use %s; stop that process or give the instance another server.port", e.Instance, e.Addr, holder)
}

// BadInput marks the error as the user's setup at fault.
func (e *PortTakenError) BadInput() bool { return true }

// CheckPort returns a *PortTakenError when the port in would bind is
// taken. Other bind errors (an address not on this machine) are left for
// the server itself to report.
func CheckPort(in config.Instance) error {
	addr := net.JoinHostPort(strings.Trim(in.Host, "[]"), strconv.Itoa(in.Port))
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
		return nil
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		return nil
	}
	return &PortTakenError{Instance: in.Name, Addr: addr, Holder: PortHolder(in.Port)}
}

// PortHolder names the process listening on port, from /proc: "pid 123
// (nginx)", or "" when no listener is visible.
func PortHolder(port int) string {
	inodes := listenInodes(port)
	if len(inodes) == 0 {
		return ""
	}
	for _, pid := range allPIDs() {
		if holdsSocket(pid, inodes) {
			return fmt.Sprintf("pid %d (%s)", pid, comm(pid))
		}
	}
	return ""
}

// ListensOn reports whether pid, or a process in the process group it
// leads, holds the socket listening on port. It is how readiness tells
// our server from another process answering on the same port. When /proc
// cannot tell (no /proc/net/tcp), it answers true: health alone decides.
func ListensOn(pid, port int) bool {
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		return true
	}
	inodes := listenInodes(port)
	if len(inodes) == 0 {
		return false
	}
	if holdsSocket(pid, inodes) {
		return true
	}
	// A wrapper that forks the real server keeps it in its group.
	for _, p := range allPIDs() {
		if p != pid && pgrpOf(p) == pid && holdsSocket(p, inodes) {
			return true
		}
	}
	return false
}

// listenInodes returns the inodes of sockets in LISTEN state on port, from
// /proc/net/tcp and /proc/net/tcp6.
func listenInodes(port int) map[string]bool {
	out := map[string]bool{}
	want := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fs := strings.Fields(sc.Text())
			if len(fs) < 10 || fs[3] != "0A" || !strings.HasSuffix(fs[1], want) {
				continue
			}
			out[fs[9]] = true
		}
		fh.Close()
	}
	return out
}

func holdsSocket(pid int, inodes map[string]bool) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		link, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue
		}
		if ino, ok := strings.CutPrefix(link, "socket:["); ok && inodes[strings.TrimSuffix(ino, "]")] {
			return true
		}
	}
	return false
}

func allPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

func comm(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// pgrpOf reads a process's group from /proc/<pid>/stat (after the last
// ')': state, ppid, pgrp).
func pgrpOf(pid int) int {
	f := StatFields(pid)
	if len(f) < 3 {
		return -1
	}
	n, _ := strconv.Atoi(f[2])
	return n
}

// StatFields returns the fields of /proc/<pid>/stat after the command
// name (which may hold spaces): state, ppid, pgrp, session, …
func StatFields(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}
