package control

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/llamaboot/llamaboot/internal/health"
	"github.com/llamaboot/llamaboot/internal/supervise"
)

// PendingHealth judges instances waiting outside the supervisor (as
// Server.Pending reports them): one still downloading its model is alive
// but not ready; one whose download failed is neither.
func PendingHealth(st []InstanceStatus) []health.InstanceHealth {
	out := make([]health.InstanceHealth, 0, len(st))
	for _, s := range st {
		ih := health.InstanceHealth{Name: s.Name, State: s.State, Live: true, Why: "downloading its model (progress in llamaboot status)"}
		if s.Error != "" {
			ih.Live, ih.Why = false, "failed: "+s.Error
		}
		out = append(out, ih)
	}
	return out
}

func (s *Server) pendingHealth() []health.InstanceHealth {
	if s.Pending == nil {
		return nil
	}
	return PendingHealth(s.Pending())
}

// health answers GET /health?live=1&instance=NAME on the control socket.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name := q.Get("instance")
	if name != "" && !validName().MatchString(name) {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("invalid instance name %q: names are letters, digits, '.', '_' and '-'", name))
		return
	}
	h, err := health.JudgeWith(health.OperatorStopped(s.Sup.Snapshots(), s.OperatorStopped), s.pendingHealth(), time.Now(), q.Get("live") == "1", name)
	if errors.Is(err, supervise.ErrUnknownInstance) {
		writeError(w, http.StatusNotFound, "unknown_instance", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, h.Gated(s.NotReady, name))
}

// GetHealth asks the supervisor on sock for its verdict, giving up after
// timeout (a supervisor that does not answer is not healthy).
func GetHealth(sock, instance string, live bool, timeout time.Duration) (health.Health, error) {
	var h health.Health
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	q := url.Values{}
	if instance != "" {
		q.Set("instance", instance)
	}
	if live {
		q.Set("live", "1")
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://llamaboot/health?"+q.Encode(), nil)
	resp, err := client(sock).Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return h, fmt.Errorf("the supervisor did not answer on %s within %s", sock, timeout)
		}
		return h, dialError(sock, err)
	}
	defer resp.Body.Close()
	return h, readReply(resp, &h)
}
