package supervise

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
)

// SocketPath is where the supervisor of app listens: <app>/.llamaboot.sock,
// or a name in the temp dir when that path is too long for a unix socket.
func SocketPath(app string) string {
	p := filepath.Join(app, ".llamaboot.sock")
	if len(p) < 100 {
		return p
	}
	sum := sha256.Sum256([]byte(app))
	return filepath.Join(os.TempDir(), "llamaboot-"+hex.EncodeToString(sum[:6])+".sock")
}

// Status is what `llamaboot status --json` prints.
type Status struct {
	Supervisor *SupervisorInfo  `json:"supervisor"`
	Bundle     any              `json:"bundle"`
	Instances  []InstanceStatus `json:"instances"`
}

// SupervisorInfo describes the running supervisor.
type SupervisorInfo struct {
	PID      int      `json:"pid"`
	UptimeS  float64  `json:"uptime_s"`
	Cmd      []string `json:"cmd,omitempty"`
	CmdPID   int      `json:"cmd_pid,omitempty"`
	Socket   string   `json:"socket"`
	AppDir   string   `json:"app_dir"`
	Instance int      `json:"instance_count"`
}

// Server answers status and control requests for a supervisor.
type Server struct {
	Sup    *Supervisor
	Info   func() SupervisorInfo
	Bundle func() any
	srv    *http.Server
	path   string
}

// Listen serves on path until Close.
func (s *Server) Listen(path string) error {
	_ = os.Remove(path) // a socket left by a killed supervisor
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", path, err)
	}
	_ = os.Chmod(path, 0o660)
	s.path = path
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		info := s.Info()
		writeJSON(w, Status{Supervisor: &info, Bundle: s.Bundle(), Instances: s.Sup.Statuses()})
	})
	mux.HandleFunc("POST /control/{op}/{name}", func(w http.ResponseWriter, r *http.Request) {
		op := r.PathValue("op")
		if op != "restart" && op != "stop" {
			http.Error(w, "unknown operation "+op, http.StatusBadRequest)
			return
		}
		if err := s.Sup.Control(r.PathValue("name"), op); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		writeJSON(w, []string{fmt.Sprintf("%s: %s requested", r.PathValue("name"), op)})
	})
	mux.HandleFunc("POST /adopt", func(w http.ResponseWriter, r *http.Request) {
		var req adoptRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var lines []string
		for i := range req.Instances {
			in := &req.Instances[i]
			in.ReadyTimeout = time.Duration(in.ReadyTimeoutS * float64(time.Second))
			in.StopTimeout = time.Duration(in.StopTimeoutS * float64(time.Second))
			if err := s.Sup.Add(*in); err != nil {
				lines = append(lines, fmt.Sprintf("%s: not started: %v", in.Name, err))
				continue
			}
			lines = append(lines, fmt.Sprintf("%s: handed to the supervisor (pid %d); log %s, url %s", in.Name, os.Getpid(), in.LogFile, in.URL))
		}
		if req.Wait {
			lines = append(lines, s.waitReady(r.Context(), req.Instances)...)
		}
		writeJSON(w, lines)
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go s.srv.Serve(ln)
	return nil
}

func (s *Server) waitReady(ctx context.Context, ins []config.Instance) []string {
	var lines []string
	for _, in := range ins {
		deadline := time.Now().Add(in.ReadyTimeout)
		for {
			var st string
			for _, x := range s.Sup.Statuses() {
				if x.Name == in.Name {
					st = x.State
				}
			}
			if st == StateReady || st == StateFailed || time.Now().After(deadline) || ctx.Err() != nil {
				lines = append(lines, fmt.Sprintf("%s: %s", in.Name, st))
				break
			}
			time.Sleep(25 * time.Millisecond)
		}
	}
	return lines
}

// Close stops serving and removes the socket.
func (s *Server) Close() {
	if s.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = s.srv.Shutdown(ctx)
		_ = os.Remove(s.path)
	}
}

type adoptRequest struct {
	Instances []config.Instance `json:"instances"`
	Wait      bool              `json:"wait"`
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func client(sock string) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Minute,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}
}

// Running reports whether a supervisor answers on sock.
func Running(sock string) bool {
	c := client(sock)
	c.Timeout = time.Second
	resp, err := c.Get("http://llamaboot/status")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// ErrNoSupervisor means no supervisor answers on the socket.
var ErrNoSupervisor = errors.New("no supervisor is running")

// GetStatus asks the supervisor on sock for its status.
func GetStatus(sock string) (Status, error) {
	var st Status
	resp, err := client(sock).Get("http://llamaboot/status")
	if err != nil {
		return st, fmt.Errorf("%w (socket %s)", ErrNoSupervisor, sock)
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// Control asks the supervisor on sock to restart or stop an instance.
func Control(sock, op, name string) ([]string, error) {
	return post(sock, "/control/"+op+"/"+name, nil)
}

// Adopt hands the plan's instances to the supervisor on sock.
func Adopt(sock string, plan *config.Plan, wait bool) ([]string, error) {
	return post(sock, "/adopt", adoptRequest{Instances: plan.Instances, Wait: wait})
}

func post(sock, path string, body any) ([]string, error) {
	b, _ := json.Marshal(body)
	resp, err := client(sock).Post("http://llamaboot"+path, "application/json", bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w (socket %s)", ErrNoSupervisor, sock)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("supervisor: %s", string(msg))
	}
	var lines []string
	return lines, json.NewDecoder(resp.Body).Decode(&lines)
}
