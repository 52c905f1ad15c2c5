package control

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llamaboot/llamaboot/internal/config"
	"github.com/llamaboot/llamaboot/internal/supervise"
	"github.com/llamaboot/llamaboot/internal/supervise/supervisetest"
)

func TestSocketHealth(t *testing.T) {
	h := supervisetest.New(t)
	sock := serve(t, h)
	h.Sup.Apply([]config.Instance{h.Spec("a", 8001, "on-failure")})
	ev := h.Expect("a", supervise.EvStarted)
	r, err := GetHealth(sock, "", false, 5*time.Second)
	if err != nil || r.OK || !strings.HasPrefix(r.Summary, "not ready: a: starting for") || r.Instances[0].State != "starting" {
		t.Errorf("while loading: %+v %v", r, err)
	}
	if r, err := GetHealth(sock, "", true, 5*time.Second); err != nil || !r.OK {
		t.Errorf("loading is live: %+v %v", r, err)
	}
	h.Probe.Report(t, ev.PID)
	h.Expect("a", supervise.EvReady)
	if r, err := GetHealth(sock, "a", false, 5*time.Second); err != nil || !r.OK || r.Summary != "ready: a" {
		t.Errorf("ready: %+v %v", r, err)
	}
	_, err = GetHealth(sock, "b", false, 5*time.Second)
	var re *RemoteError
	if !errors.As(err, &re) || !re.BadInput() || !strings.Contains(err.Error(), `no such instance: "b" (supervised: a)`) {
		t.Errorf("unknown instance: %v", err)
	}
	if _, err := GetHealth(sock, "../a", false, 5*time.Second); !errors.As(err, &re) || re.Status != 400 {
		t.Errorf("bad name: %v", err)
	}
	if _, err := GetHealth(filepath.Join(t.TempDir(), "none.sock"), "", false, time.Second); !errors.Is(err, ErrNoSupervisor) {
		t.Errorf("no supervisor: %v", err)
	}
}

// Durations in status JSON are seconds to the millisecond, without float
// noise.
func TestSecondsHaveNoFloatNoise(t *testing.T) {
	b, _ := json.Marshal(Seconds(1117*time.Millisecond + 678*time.Microsecond))
	if string(b) != "1.118" {
		t.Errorf("%s", b)
	}
}

func TestPendingHealth(t *testing.T) {
	if h := PendingHealth([]InstanceStatus{{Name: "d", State: "downloading"}, {Name: "e", Error: "HTTP 404"}}); h[0].Ready || !h[0].Live || h[1].Live {
		t.Errorf("pending: %+v", h)
	}
}

func TestRemoteError(t *testing.T) {
	if (&RemoteError{Msg: "x"}).Error() != "supervisor: x" {
		t.Error("RemoteError")
	}
}
