package connlimit

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// dialFrom connects to addr from the loopback address src. A refused
// connection may be reset before the dial returns: then c is nil.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer reports whether the server closed c (reset at dial, or a
// read ends at once) rather than keeping it (the read times out).
func closedByServer(c net.Conn) bool {
	if c == nil {
		return true
	}
	c.SetReadDeadline(time.Now().Add(400 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout()) || errors.Is(err, io.EOF)
}

// serveHeld accepts on l and holds every connection until its client
// closes it, as an HTTP server holds an idle one.
func serveHeld(t *testing.T, l net.Listener) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
}

func TestCaps(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(ln, Limits{Max: 5, PerPeer: 3}, IPPeer)
	defer l.Close()
	serveHeld(t, l)
	addr := ln.Addr().String()
	steps := []struct {
		from   string
		closed bool
	}{
		{"127.0.0.1", false}, {"127.0.0.1", false}, {"127.0.0.1", false},
		{"127.0.0.1", true}, // over the per-peer cap
		{"127.0.0.2", false}, {"127.0.0.2", false},
		{"127.0.0.3", true}, // over the total cap
	}
	var held []net.Conn
	for i, s := range steps {
		c := dialFrom(t, s.from, addr)
		if got := closedByServer(c); got != s.closed {
			t.Errorf("step %d from %s: closed %v, want %v", i, s.from, got, s.closed)
		}
		if !s.closed {
			held = append(held, c)
		}
	}
	if l.Refused() != 2 {
		t.Errorf("refused %d, want 2", l.Refused())
	}
	// A closed connection frees its place.
	held[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for l.Open() != 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c := dialFrom(t, "127.0.0.3", addr); closedByServer(c) {
		t.Error("a freed place was not given to the next client")
	}
}

func TestCapsPlacesAreReleased(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	l := New(ln, Limits{Max: 2, PerPeer: 2}, IPPeer)
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close() // served and closed at once
		}
	}()
	for i := range 50 {
		c := dialFrom(t, "127.0.0.1", ln.Addr().String())
		closedByServer(c)
		if c != nil {
			c.Close()
		}
		if l.Refused() != 0 {
			t.Fatalf("connection %d refused: places of closed connections were not released", i)
		}
	}
}

func TestHeadroom(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	free := FreeFDs()
	if free <= 0 || free > 1<<29 {
		t.Fatalf("FreeFDs = %d", free)
	}
	l := New(ln, Limits{Headroom: free + 1000}, IPPeer) // more than there is
	defer l.Close()
	serveHeld(t, l)
	if c := dialFrom(t, "127.0.0.1", ln.Addr().String()); !closedByServer(c) {
		t.Error("a connection was kept with less descriptor headroom than asked")
	}
}
