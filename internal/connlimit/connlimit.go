// Package connlimit bounds what clients of llamaboot's endpoints (the
// --listen HTTP endpoint, the control socket) can hold of PID 1: a cap on
// open connections, a smaller cap per peer (an IP address, or a uid on a
// unix socket), and file-descriptor headroom kept for starting instances.
// A connection over a cap is closed as soon as it is accepted, so idle
// clients cannot pile up descriptors until a crashed instance can no
// longer be restarted ("pipe2: too many open files").
package connlimit

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Limits are the caps of one listener.
type Limits struct {
	Max     int // open connections at once
	PerPeer int // open connections from one peer
	// Headroom is the number of descriptors that must stay free in the
	// process after accepting (for pipes, logs and sockets of instances
	// being started); below it, new connections are closed.
	Headroom int
}

// Listener is a net.Listener that enforces Limits.
type Listener struct {
	net.Listener
	lim  Limits
	peer func(net.Conn) string

	// Refuse, when set, is handed each connection refused and why, and
	// closes it (the control socket answers the client with why first, so
	// a refusal is never taken for "nothing listens here"). It runs in
	// the accept loop: it must not block, and must bound what it holds.
	Refuse func(c net.Conn, why string)

	mu    sync.Mutex
	open  int
	peers map[string]int

	refused atomic.Int64
}

// New wraps ln; peer names a connection's peer (IPPeer, UIDPeer).
func New(ln net.Listener, lim Limits, peer func(net.Conn) string) *Listener {
	return &Listener{Listener: ln, lim: lim, peer: peer, peers: map[string]int{}}
}

// Refused counts the connections closed at accept for being over a cap.
func (l *Listener) Refused() int64 { return l.refused.Load() }

// Open is the number of connections held now.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// Accept returns the next connection within the limits, closing those
// over them.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := l.peer(c)
		l.mu.Lock()
		why := ""
		switch {
		case l.lim.PerPeer > 0 && l.peers[key] >= l.lim.PerPeer:
			why = fmt.Sprintf("busy: %d connections of %s are open; the cap is %d", l.peers[key], key, l.lim.PerPeer)
		case l.lim.Max > 0 && l.open >= l.lim.Max:
			why = fmt.Sprintf("busy: %d connections are open; the cap is %d", l.open, l.lim.Max)
		case l.lim.Headroom > 0 && FreeFDs() < l.lim.Headroom:
			why = fmt.Sprintf("busy: fewer than %d file descriptors are free (kept for starting instances)", l.lim.Headroom)
		}
		if why != "" {
			l.mu.Unlock()
			l.refused.Add(1)
			if l.Refuse != nil {
				l.Refuse(c, why)
				continue
			}
			if tc, isTCP := c.(*net.TCPConn); isTCP {
				_ = tc.SetLinger(0) // a reset: no TIME_WAIT kept for a refused client
			}
			c.Close()
			continue
		}
		l.open++
		l.peers[key]++
		l.mu.Unlock()
		return &conn{Conn: c, release: func() { l.release(key) }}, nil
	}
}

func (l *Listener) release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.peers[key]--; l.peers[key] <= 0 {
		delete(l.peers, key)
	}
}

type conn struct {
	net.Conn
	once    sync.Once
	release func()
}

// NetConn is the connection accepted, as tls.Conn names it: what callers
// needing the socket itself (SO_PEERCRED) look at.
func (c *conn) NetConn() net.Conn { return c.Conn }

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// IPPeer names a TCP connection's peer by its IP address.
func IPPeer(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return c.RemoteAddr().String()
}

// UIDPeer names a unix socket connection's peer by its uid
// (SO_PEERCRED); "?" when the kernel does not say.
func UIDPeer(c net.Conn) string {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return "?"
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return "?"
	}
	key := "?"
	_ = raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			key = "uid " + strconv.Itoa(int(cred.Uid))
		}
	})
	return key
}

// FreeFDs is how many more descriptors the process may open: its soft
// RLIMIT_NOFILE less those open now. Large when it cannot tell.
func FreeFDs() int {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) != nil {
		return 1 << 30
	}
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return 1 << 30
	}
	defer d.Close()
	n := 0
	for {
		names, err := d.Readdirnames(1024)
		n += len(names)
		if err != nil {
			break
		}
	}
	return int(min(rl.Cur, 1<<30)) - n
}
