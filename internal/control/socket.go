// Package control owns the supervisor's control socket: the server that
// answers status, control (start/stop/restart), hand-overs from `run`,
// logs, health and reload requests on a unix socket only root and the
// supervisor's own user may use, the client calls the CLI makes, and the
// wire types that travel between them (kept apart from the supervisor's
// domain types, so that neither changes the other silently). What a
// request leads to is the instance owner's decision (supervise.Decision);
// this package follows the events from there and reports them.
package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/connlimit"
	"github.com/llamaboot/llamaboot/internal/dirs"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

// SocketPath is where the supervisor of app listens: <app>/.llamaboot.sock,
// whatever the app dir's length and whoever asks.
//
// A unix socket's address holds at most 107 bytes. A longer path is
// reached through a descriptor of its directory (/proc/self/fd/N/NAME, as
// systemd does), by the supervisor to bind it and by clients to connect.
// There is no fallback directory elsewhere: one under the temp dir could be
// made first by another user (the supervisor then had no socket, and the
// healthcheck failed for good), and one that depends on who asks (root's
// under /run, others' under the temp dir) was not found by root's
// clients of a non-root supervisor.
func SocketPath(app string) string {
	return filepath.Join(app, ".llamaboot.sock")
}

// maxSockAddr is the longest path bound or dialled by its name (sun_path
// holds 108 bytes with the NUL).
const maxSockAddr = 107

// viaDir calls fn with an address for sock that fits a socket address:
// sock itself, or for a longer path /proc/self/fd/N/NAME, N an O_PATH
// descriptor of its directory open while fn runs (open is how it is
// opened). The descriptor is closed after fn: for a bind, the address
// must never be used again (a later descriptor N could be another dir).
func viaDir(sock string, open func(dir string) (int, error), fn func(addr string) error) error {
	if len(sock) <= maxSockAddr {
		return fn(sock)
	}
	fd, err := open(filepath.Dir(sock))
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return fn("/proc/self/fd/" + strconv.Itoa(fd) + "/" + filepath.Base(sock))
}

// openPath opens dir by its path, as a client reaches it.
func openPath(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	return fd, nil
}

// validName is what config accepts as an instance name; anything else in
// a request is refused before it is looked up.
var validName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`) })

// Server answers status and control requests for a supervisor. Only root
// and the supervisor's own uid may use it: the socket is 0600 and every
// connection's peer credentials (SO_PEERCRED) are checked, because `run`
// hands executables to the supervisor, which runs them as its own user.
type Server struct {
	Sup    *supervise.Supervisor
	Info   func() SupervisorInfo
	Bundle func() any
	// Reloader reloads the config served; nil when none is.
	Reloader *supervise.Reloader
	// Pending, when set, reports instances not handed to the supervisor
	// yet (waiting for their model downloads, or failed there); Downloads
	// reports the downloads themselves.
	Pending func() []InstanceStatus
	// NotReady, when set, says why the supervisor itself is not ready
	// (see Health.Gated): health checks answer not ready meanwhile.
	NotReady  func(instances int) string
	Downloads func() any
	// Router, when set, reports the router (nil: none runs).
	Router func() any
	// OperatorStopped, when set, says whether the operator stopped an
	// on-demand instance (the router knows): health judges it not ready.
	OperatorStopped func(name string) bool
	// UID is the uid allowed besides root (default: ours).
	UID int
	// IdleTimeout closes a client connection idle between requests
	// (default 30s).
	IdleTimeout time.Duration
	srv         *http.Server
	path        string
	dir         *dirs.Dir // the socket's, open while it serves
	name        string
	follows     follows
}

// restrictSocket makes the socket name in d 0600 without following a link
// there: chmod by name follows one, and whoever can rename in d could swap
// the socket just bound for a link to a file of root's. The name is
// opened O_PATH|O_NOFOLLOW, must be a socket of ours, and is changed
// through its descriptor (as glibc's fchmodat AT_SYMLINK_NOFOLLOW does).
func restrictSocket(d *dirs.Dir, name string) error {
	fd, err := unix.Openat(d.Fd(), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s was replaced (by uid %d) right after it was bound", d.Join(name), st.Uid)
	}
	return unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), 0o600)
}

// squatter says who holds name in d when a bind failed on it.
func squatter(d *dirs.Dir, name string) string {
	var st unix.Stat_t
	if err := unix.Fstatat(d.Fd(), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return ""
	}
	return fmt.Sprintf(" (%s is there already, owned by uid %d: if no llamaboot runs on this app dir, remove it)", d.Join(name), st.Uid)
}

// socketLimits bound the control socket's connections, as the --listen
// endpoint's are. Long-lived `logs -f` streams have their own, smaller cap
// per uid (maxFollows), checked once the request is read: past it, the
// connections left are for short requests (status, the healthcheck,
// start/stop/restart), so 32 followers cannot get a liveness probe refused.
var socketLimits = connlimit.Limits{Max: 128, PerPeer: 96, Headroom: 64}

// maxFollows is how many `logs -f` streams one uid may hold open.
const maxFollows = 32

// refusing bounds the connections refused at accept being answered at
// once: past it, one is closed without an answer (its client reports the
// connection ended unanswered, a GET retries).
var refusing = make(chan struct{}, 16)

// refuseBusy answers a connection refused at accept with why, as an HTTP
// 503 whose body is one line of JSON (code "busy"), so the client reports
// the refusal (and retries a while) instead of taking the closed
// connection for no supervisor. The request is read first (for at most
// 2s): answered before it is sent, a client may find its write failed
// rather than the answer.
func refuseBusy(c net.Conn, why string) {
	select {
	case refusing <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-refusing }()
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if req, err := http.ReadRequest(bufio.NewReaderSize(io.LimitReader(c, 2<<20), 4096)); err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(req.Body, 1<<20))
		}
		body, _ := json.Marshal(ErrorReply{Error: why, Code: codeBusy})
		_, _ = fmt.Fprintf(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n", len(body)+1, body)
	}()
}

// Error codes of refusals for being over a cap: codeBusy (at accept, for a
// moment: clients retry), codeTooManyFollows (the logs -f cap: retrying
// at once would not help).
const (
	codeBusy           = "busy"
	codeTooManyFollows = "too_many_follows"
)

// follows counts the `logs -f` streams open, by uid.
type follows struct {
	mu    sync.Mutex
	byUID map[uint32]int
}

// take counts one more stream of uid, or says why not.
func (f *follows) take(uid uint32) (release func(), why string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.byUID == nil {
		f.byUID = map[uint32]int{}
	}
	if n := f.byUID[uid]; n >= maxFollows {
		return nil, fmt.Sprintf("busy: %d log streams (logs -f) of uid %d are open; the cap is %d", n, uid, maxFollows)
	}
	f.byUID[uid]++
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.byUID[uid]--; f.byUID[uid] <= 0 {
			delete(f.byUID, uid)
		}
	}, ""
}

type credKey struct{}

type peer struct {
	cred *unix.Ucred
	err  error
}

// Listen serves on path until Close. Its directory is reached through
// package dirs (no link another user owns followed), the socket bound,
// made 0600 and later removed relative to that directory's descriptor.
func (s *Server) Listen(path string) error {
	if s.UID == 0 {
		s.UID = os.Getuid()
	}
	d, err := dirs.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("listen on %s: %w", path, err)
	}
	name := filepath.Base(path)
	// A socket left by a killed supervisor; anything else is not ours to
	// remove, and the bind below names it.
	if m, _, err := d.Lstat(name); err == nil && m&fs.ModeSocket != 0 {
		_ = d.Remove(name)
	}
	var ln net.Listener
	dup := func(string) (int, error) { return unix.FcntlInt(uintptr(d.Fd()), unix.F_DUPFD_CLOEXEC, 0) }
	err = viaDir(path, dup, func(addr string) error {
		var lerr error
		ln, lerr = net.Listen("unix", addr)
		return lerr
	})
	if err != nil {
		who := squatter(d, name)
		d.Close()
		return fmt.Errorf("listen on %s: %w%s", path, err, who)
	}
	// Removed by Close relative to d, never by a name that may since
	// lead elsewhere.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := restrictSocket(d, name); err != nil {
		ln.Close()
		_ = d.Remove(name)
		d.Close()
		return fmt.Errorf("restrict %s to its owner: %w", path, err)
	}
	s.dir, s.name = d, name
	s.path = path
	if s.IdleTimeout <= 0 {
		s.IdleTimeout = 30 * time.Second
	}
	cl := connlimit.New(ln, socketLimits, connlimit.UIDPeer)
	cl.Refuse = refuseBusy
	ln = cl
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, s.status()) })
	mux.HandleFunc("POST /control", s.control)
	mux.HandleFunc("POST /adopt", s.adopt)
	mux.HandleFunc("POST /logs", s.logs)
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("POST /reload", s.reload)
	// No WriteTimeout: a control request with --wait, or logs --follow,
	// answers for as long as it takes.
	s.srv = &http.Server{Handler: s.checkPeer(mux), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: s.IdleTimeout,
		MaxHeaderBytes: 16 << 10,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			cred, err := peerCred(c)
			return context.WithValue(ctx, credKey{}, peer{cred, err})
		}}
	go s.srv.Serve(ln)
	return nil
}

func peerCred(c net.Conn) (*unix.Ucred, error) {
	if w, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = w.NetConn() // under connlimit's accounting
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return nil, err
	}
	return cred, cerr
}

// checkPeer refuses every request from a uid other than root and ours,
// whatever the socket file's mode.
func (s *Server) checkPeer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := r.Context().Value(credKey{}).(peer)
		if p.cred == nil || p.cred.Uid != 0 && int(p.cred.Uid) != s.UID {
			// Refused: the connection ends with the answer, nothing kept open.
			w.Header().Set("Connection", "close")
		}
		switch {
		case p.cred == nil:
			writeError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("permission denied: cannot tell who is asking (%v)", p.err))
		case p.cred.Uid != 0 && int(p.cred.Uid) != s.UID:
			writeError(w, http.StatusForbidden, "forbidden", fmt.Sprintf(
				"permission denied: uid %d may not use this supervisor (only root and uid %d may; group membership does not count)", p.cred.Uid, s.UID))
		default:
			next.ServeHTTP(w, r)
		}
	})
}

func (s *Server) status() Status {
	info := s.Info()
	snaps := s.Sup.Snapshots()
	st := Status{Supervisor: &info, Bundle: s.Bundle(), Instances: make([]InstanceStatus, 0, len(snaps))}
	now := time.Now()
	var wg sync.WaitGroup
	for i, sn := range snaps {
		st.Instances = append(st.Instances, wireInstance(sn, now))
		if sn.Spec.RouterMode() && sn.State == supervise.Ready {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				models, err := supervise.RouterStatus(ctx, sn.Spec)
				if err != nil {
					st.Instances[i].ModelsErr = err.Error()
				}
				st.Instances[i].Models = models
			}()
		}
	}
	wg.Wait()
	if s.Pending != nil {
		st.Instances = append(st.Instances, s.Pending()...)
	}
	if s.Downloads != nil {
		st.Downloads = s.Downloads()
	}
	if s.Router != nil {
		st.Router = s.Router()
	}
	return st
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "malformed request: "+err.Error())
		return false
	}
	return true
}

func (s *Server) control(w http.ResponseWriter, r *http.Request) {
	var req ControlRequest
	if !decode(w, r, &req) {
		return
	}
	op, ok := supervise.ParseOp(req.Op)
	if !ok {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("unknown operation %q (start, stop, restart)", req.Op))
		return
	}
	if !validName().MatchString(req.Name) {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("invalid instance name %q: names are letters, digits, '.', '_' and '-'", req.Name))
		return
	}
	events, cancel := s.Sup.Subscribe()
	defer cancel()
	d, err := s.Sup.Control(req.Name, op)
	if err != nil {
		s.controlError(w, req.Name, err)
		return
	}
	rep := Reply{Lines: []string{fmt.Sprintf("%s: %s requested", req.Name, op)}}
	if req.Wait {
		more, ok := s.follow(r.Context(), events, map[string]supervise.Decision{req.Name: d})
		rep.Lines, rep.Failed = append(rep.Lines, more...), !ok
	}
	writeJSON(w, http.StatusOK, rep)
}

func (s *Server) controlError(w http.ResponseWriter, name string, err error) {
	switch {
	case errors.Is(err, supervise.ErrUnknownInstance):
		writeError(w, http.StatusNotFound, "unknown_instance", unknownInstance(name, s.Sup.Snapshots()))
	case errors.Is(err, supervise.ErrShuttingDown):
		writeError(w, http.StatusServiceUnavailable, "shutting_down", err.Error())
	default:
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
	}
}

func (s *Server) snapshot(name string) supervise.Snapshot {
	for _, sn := range s.Sup.Snapshots() {
		if sn.Spec.Name == name {
			return sn
		}
	}
	return supervise.Snapshot{}
}

func (s *Server) adopt(w http.ResponseWriter, r *http.Request) {
	var req AdoptRequest
	if !decode(w, r, &req) {
		return
	}
	specs := make([]config.Instance, len(req.Instances))
	for i, wi := range req.Instances {
		if !validName().MatchString(wi.Name) {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("invalid instance name %q", wi.Name))
			return
		}
		specs[i] = wi.Spec()
	}
	// A same-named instance running other settings (another config's, or
	// entry's own) is replaced only when asked: run --config other.toml
	// must not silently restart it.
	changes := map[string]string{}
	for _, in := range specs {
		if old, ok := s.Sup.Spec(in.Name); ok && !old.Same(in) {
			changes[in.Name] = strings.Join(supervise.SpecChanges(old, in), ", ")
		}
	}
	if len(changes) > 0 && !req.Replace {
		var diffs []string
		for _, n := range slices.Sorted(maps.Keys(changes)) {
			diffs = append(diffs, n+": "+changes[n])
		}
		writeError(w, http.StatusBadRequest, "would_replace", fmt.Sprintf("the supervisor already runs %s with other settings; nothing was changed:\n  %s\n"+
			"run --replace hands them over anyway (each restarts with these settings)", strings.Join(slices.Sorted(maps.Keys(changes)), ", "), strings.Join(diffs, "\n  ")))
		return
	}
	events, cancel := s.Sup.Subscribe()
	defer cancel()
	res, err := s.Sup.Upsert(specs)
	if err != nil {
		s.controlError(w, "", err)
		return
	}
	var lines []string
	for _, n := range res.Added {
		in, _ := s.Sup.Spec(n)
		lines = append(lines, fmt.Sprintf("%s: handed to the supervisor (pid %d); log %s, url %s", n, os.Getpid(), in.LogFile, in.URL))
	}
	for _, n := range res.Changed {
		lines = append(lines, fmt.Sprintf("%s: replaced (%s); the supervisor restarts it with these settings", n, changes[n]))
	}
	for _, n := range res.Unchanged {
		lines = append(lines, fmt.Sprintf("%s: already supervised with these settings", n))
	}
	rep := Reply{Lines: lines}
	if req.Wait {
		more, ok := s.follow(r.Context(), events, res.Decisions)
		rep.Lines, rep.Failed = append(rep.Lines, more...), !ok
	}
	writeJSON(w, http.StatusOK, rep)
}

// follow reports what came of each decided request, one line per
// instance, following the instances' events after each decision: the
// owner said what to wait for; nothing here re-derives it. A later request
// the other way (stop after start, start or restart after stop) supersedes
// the one waited for. The deadline is the longest stop plus ready timeout
// among them.
func (s *Server) follow(ctx context.Context, events <-chan supervise.Event, decided map[string]supervise.Decision) ([]string, bool) {
	result := map[string]string{}
	ok := true // every instance got where it was going
	started := map[string]bool{}
	var limit time.Duration
	for name, d := range decided {
		spec, _ := s.Sup.Spec(name)
		ready := spec.ReadyTimeout
		if ready == 0 { // no load deadline: wait as long as the client does
			ready = 24 * time.Hour
		}
		limit = max(limit, ready+spec.StopTimeout)
		switch d.Will {
		case supervise.OutcomeDone:
			result[name] = d.Note
			ok = ok && d.Note != "failed"
		case supervise.OutcomeKeptDown:
			result[name] = fmt.Sprintf("kept down (stopped by the operator: llamaboot start %s starts it with the new settings)", name)
			if spec.Routing.OnDemand {
				result[name] = "down until a request comes (on demand); it starts with the new settings then"
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	fail := func(name, why string) { result[name], ok = why, false }
	for len(result) < len(decided) {
		select {
		case <-ctx.Done():
			for name := range decided {
				if _, got := result[name]; !got {
					fail(name, fmt.Sprintf("%s (still not there after %s)", s.snapshot(name).State, limit))
				}
			}
		case ev, open := <-events:
			if !open {
				return lines(decided, result), false
			}
			if ev.Kind == supervise.EvLost { // what came of the requests may be among them
				for name := range decided {
					if _, got := result[name]; !got {
						fail(name, fmt.Sprintf("%s (lost track: %d events dropped)", s.snapshot(name).State, ev.Busy))
					}
				}
				continue
			}
			d, watched := decided[ev.Instance]
			if _, done := result[ev.Instance]; !watched || done || ev.Seq <= d.Seq {
				continue
			}
			down := d.Will == supervise.OutcomeDown
			switch {
			case ev.Kind == supervise.EvRequested && ev.Req != d.Req && (ev.Op == supervise.OpStop) != down:
				fail(ev.Instance, fmt.Sprintf("superseded by %s (asked after this request)", ev.Op))
			case ev.Kind == supervise.EvStarted:
				started[ev.Instance] = true
			case ev.Kind == supervise.EvReady && !down && (started[ev.Instance] || d.Will == supervise.OutcomeCurrent):
				result[ev.Instance] = fmt.Sprintf("ready after %.2fs (pid %d)", ev.Took.Seconds(), ev.PID)
			case ev.Kind == supervise.EvFailed:
				text, _ := ev.Line() // "<name> failed: why"; the line names it already
				fail(ev.Instance, strings.TrimPrefix(text, ev.Instance+" "))
			case ev.Kind == supervise.EvStopped && down:
				result[ev.Instance] = "stopped"
			case ev.Kind == supervise.EvStopped:
				fail(ev.Instance, "stopped ("+ev.Exit+", "+ev.Reason.String()+") before it was ready")
			case ev.Kind == supervise.EvRestarting && !down:
				fail(ev.Instance, fmt.Sprintf("%s (%s) before it was ready; restarting in %.1fs", ev.Exit, ev.Reason, ev.Delay.Seconds()))
			}
		}
	}
	return lines(decided, result), ok
}

func lines(decided map[string]supervise.Decision, result map[string]string) []string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(decided)) {
		out = append(out, fmt.Sprintf("%s: %s", name, result[name]))
	}
	return out
}

// Close stops serving and removes the socket.
func (s *Server) Close() {
	if s.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = s.srv.Shutdown(ctx)
	}
	if s.dir != nil {
		_ = s.dir.Remove(s.name)
		_ = s.dir.Close()
		s.dir = nil
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, kind, text string) {
	writeJSON(w, code, ErrorReply{Error: text, Code: kind})
}

func client(sock string) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Minute,
		// One request per client: no idle connection is kept holding a
		// place under the socket's caps once the answer is in.
		Transport: busyRetry{&http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			var c net.Conn
			err := viaDir(sock, openPath, func(addr string) error {
				var derr error
				c, derr = d.DialContext(ctx, "unix", addr)
				return derr
			})
			if err != nil {
				return nil, &dialFailed{err}
			}
			// Requests carry plans and commands: talk only to a supervisor
			// run by root or by us, never to whoever bound the name first.
			cred, err := peerCred(c)
			if err != nil || (cred.Uid != 0 && int(cred.Uid) != os.Getuid()) {
				c.Close()
				who := "an unknown user"
				if cred != nil {
					who = fmt.Sprintf("uid %d (pid %d)", cred.Uid, cred.Pid)
				}
				return nil, &RemoteError{Status: http.StatusForbidden, Code: "forbidden", Msg: fmt.Sprintf(
					"the socket %s is served by %s, neither root nor you: not talking to it (remove it if it is not llamaboot's)", sock, who)}
			}
			return c, nil
		}}},
	}
}

// dialFailed is an error connecting to the socket (nothing was sent).
type dialFailed struct{ err error }

func (e *dialFailed) Error() string { return e.err.Error() }
func (e *dialFailed) Unwrap() error { return e.err }

// busyRetryFor is how long a client retries a supervisor that refuses its
// connection for being over a cap (busy: a burst of clients) before it
// reports the refusal.
const busyRetryFor = 5 * time.Second

// busyRetry sends a request again, with backoff for up to busyRetryFor, while
// the supervisor is busy: it refused the connection at accept (a 503 with
// code busy: the request was not read), the listen queue was full
// (EAGAIN), or, for a GET (nothing changes by asking twice), it ended the
// connection without an answer (a refusal whose answer was lost).
type busyRetry struct{ base *http.Transport }

func (b busyRetry) CloseIdleConnections() { b.base.CloseIdleConnections() }

func (b busyRetry) RoundTrip(req *http.Request) (*http.Response, error) {
	deadline := time.Now().Add(busyRetryFor)
	wait := 20 * time.Millisecond
	for {
		resp, err := b.base.RoundTrip(req)
		again := false
		var reply []byte
		switch {
		case err == nil && resp.StatusCode == http.StatusServiceUnavailable:
			reply, _ = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			resp.Body = io.NopCloser(bytes.NewReader(reply))
			var e ErrorReply
			again = json.Unmarshal(reply, &e) == nil && e.Code == codeBusy
		case err != nil && req.Context().Err() == nil:
			var df *dialFailed
			again = errors.Is(err, syscall.EAGAIN) ||
				req.Method == http.MethodGet && !errors.As(err, &df) && !errors.As(err, new(*RemoteError))
		}
		// Retrying stops short of the caller's own deadline (the
		// healthcheck's --timeout), so the refusal is what it reports.
		if d, ok := req.Context().Deadline(); ok && time.Now().Add(wait+250*time.Millisecond).After(d) {
			return resp, err
		}
		if !again || time.Now().Add(wait).After(deadline) || req.Body != nil && req.GetBody == nil {
			return resp, err
		}
		select {
		case <-req.Context().Done():
			return resp, err
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
		if req.GetBody != nil {
			body, gerr := req.GetBody()
			if gerr != nil {
				return resp, err
			}
			req = req.Clone(req.Context())
			req.Body = body
		}
	}
}

// ErrNoSupervisor means no supervisor answers on the socket.
var ErrNoSupervisor = errors.New("no supervisor is running")

// dialError explains why the socket could not be reached.
func dialError(sock string, err error) error {
	var re *RemoteError
	if errors.As(err, &re) {
		return re
	}
	if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
		return &RemoteError{Status: http.StatusForbidden, Code: "forbidden", Msg: fmt.Sprintf(
			"permission denied on %s: only root and the supervisor's own user may use it (you are uid %d)", sock, os.Getuid())}
	}
	// Only a socket nobody listens on (or none there) means no supervisor:
	// one that accepted the connection runs, whatever became of it.
	var df *dialFailed
	if !errors.As(err, &df) {
		return fmt.Errorf("the supervisor on %s ended the connection without answering: %w", sock, err)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("cannot connect to the supervisor on %s: %w", sock, df.err)
	}
	return fmt.Errorf("%w (socket %s)", ErrNoSupervisor, sock)
}

// Running reports whether a supervisor answers on sock (refusing us
// counts as running: it is there).
func Running(sock string) bool {
	c := client(sock)
	c.Timeout = time.Second
	resp, err := c.Get("http://llamaboot/status")
	if err != nil {
		return !errors.Is(dialError(sock, err), ErrNoSupervisor)
	}
	resp.Body.Close()
	return true
}

// GetStatus asks the supervisor on sock for its status.
func GetStatus(sock string) (Status, error) {
	var st Status
	resp, err := client(sock).Get("http://llamaboot/status")
	if err != nil {
		return st, dialError(sock, err)
	}
	defer resp.Body.Close()
	return st, readReply(resp, &st)
}

// ErrNotReached is returned with the lines when a waited-for instance did
// not get where it was asked to go (failed, crashed, timed out).
var ErrNotReached = errors.New("not every instance got there")

// Control asks the supervisor on sock for op on an instance; with wait,
// the answer comes once the instance is ready again (or down, for stop).
func Control(sock string, op supervise.Op, name string, wait bool) ([]string, error) {
	return call(sock, "/control", ControlRequest{Op: op.String(), Name: name, Wait: wait})
}

// Adopt hands the plan's instances to the supervisor on sock.
func Adopt(sock string, plan *config.Plan, wait, replace bool) ([]string, error) {
	req := AdoptRequest{Wait: wait, Replace: replace}
	for _, in := range plan.Instances {
		req.Instances = append(req.Instances, WireInstance(in))
	}
	return call(sock, "/adopt", req)
}

func call(sock, path string, req any) ([]string, error) {
	var rep Reply
	if err := post(sock, path, req, &rep); err != nil {
		return nil, err
	}
	if rep.Failed {
		return rep.Lines, ErrNotReached
	}
	return rep.Lines, nil
}

func post(sock, path string, body, out any) error {
	b, _ := json.Marshal(body)
	resp, err := client(sock).Post("http://llamaboot"+path, "application/json", bytes.NewReader(b))
	if err != nil {
		return dialError(sock, err)
	}
	defer resp.Body.Close()
	return readReply(resp, out)
}

func readReply(resp *http.Response, out any) error {
	if resp.StatusCode != http.StatusOK {
		var e ErrorReply
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(raw))
		}
		return &RemoteError{Status: resp.StatusCode, Code: e.Code, Msg: e.Error}
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// unknownInstance says name is not supervised and which are. One being
// removed may still be in the snapshots: it is not listed as there.
func unknownInstance(name string, snaps []supervise.Snapshot) string {
	var names []string
	for _, sn := range snaps {
		if sn.Spec.Name != name {
			names = append(names, sn.Spec.Name)
		}
	}
	if len(names) == 0 {
		return fmt.Sprintf("no instance %q is supervised (none is)", name)
	}
	return fmt.Sprintf("no instance %q is supervised (instances: %s)", name, strings.Join(names, ", "))
}
