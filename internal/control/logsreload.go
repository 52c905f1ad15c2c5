package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"

	"github.com/llamaboot/llamaboot/internal/logstream"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

// The control socket's /logs (streamed by logstream) and /reload.

func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	var req LogsRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Tail < 0 {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("tail must be 0 or more lines, not %d", req.Tail))
		return
	}
	if req.Name != "" && !validName().MatchString(req.Name) {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("invalid instance name %q: names are letters, digits, '.', '_' and '-'", req.Name))
		return
	}
	if req.Follow {
		var uid uint32
		if p, _ := r.Context().Value(credKey{}).(peer); p.cred != nil {
			uid = p.cred.Uid
		}
		release, why := s.follows.take(uid)
		if why != "" {
			writeError(w, http.StatusServiceUnavailable, codeTooManyFollows, why)
			return
		}
		defer release()
	}
	st, err := logstream.Open(s.Sup, req.Name, req.Tail, req.Follow)
	switch {
	case errors.Is(err, supervise.ErrUnknownInstance):
		s.controlError(w, req.Name, err)
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	defer st.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	st.Run(r.Context(), w)
}

// Logs writes the log lines the supervisor on sock sends for req to out;
// with req.Follow it returns when the instance (every instance, for no
// name) goes away or the supervisor stops.
func Logs(sock string, req LogsRequest, out io.Writer) error {
	b, _ := json.Marshal(req)
	c := client(sock)
	c.Timeout = 0 // a follow lasts as long as the reader wants
	resp, err := c.Post("http://llamaboot/logs", "application/json", bytes.NewReader(b))
	if err != nil {
		return dialError(sock, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readReply(resp, nil)
	}
	_, err = io.Copy(out, resp.Body)
	return err
}

// ErrNoConfig refuses a reload when the supervisor serves no config.
var ErrNoConfig = errors.New("this supervisor serves no config: set AUTO_INFER_LLAMA_CPP_ON_BOOT=1 and AUTO_INFER_LLAMA_CPP_CONFIG for entry to serve (and reload) one")

func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	var req ReloadRequest
	if !decode(w, r, &req) {
		return
	}
	if s.Reloader == nil {
		writeError(w, http.StatusBadRequest, "no_config", ErrNoConfig.Error())
		return
	}
	events, cancel := s.Sup.Subscribe()
	defer cancel()
	rep, err := s.Reloader.Run(req.DryRun, "llamaboot reload")
	var bad interface{ BadInput() bool }
	switch {
	case err != nil && errors.As(err, &bad) && bad.BadInput():
		writeError(w, http.StatusBadRequest, "invalid_config", err.Error())
		return
	case errors.Is(err, supervise.ErrShuttingDown):
		writeError(w, http.StatusServiceUnavailable, "shutting_down", err.Error())
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	head := fmt.Sprintf("reload of %s", rep.File)
	if req.DryRun {
		head += " (dry run: nothing done)"
	}
	reply := ReloadReply{Lines: append([]string{head}, rep.Lines()...), Warnings: rep.Warnings,
		Added: rep.Result.Added, Changed: rep.Result.Changed, Removed: rep.Result.Removed, Unchanged: rep.Result.Unchanged}
	if req.Wait && !req.DryRun {
		want := map[string]supervise.Decision{}
		for _, n := range append(slices.Clone(rep.Result.Added), rep.Result.Changed...) {
			if d, ok := rep.Result.Decisions[n]; ok {
				want[n] = d
			}
		}
		if len(want) > 0 {
			lines, ok := s.follow(r.Context(), events, want)
			reply.Lines = append(reply.Lines, lines...)
			reply.NotReady = !ok
		}
	}
	writeJSON(w, http.StatusOK, reply)
}

// Reload asks the supervisor on sock to reload its config; with wait, the
// answer comes once started and restarted instances are ready.
func Reload(sock string, dryRun, wait bool) (ReloadReply, error) {
	var rep ReloadReply
	err := post(sock, "/reload", ReloadRequest{DryRun: dryRun, Wait: wait}, &rep)
	return rep, err
}
