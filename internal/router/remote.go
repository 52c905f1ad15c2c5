package router

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// remoteNames are the names instances in llama.cpp's router mode list on
// their /models (they load those models themselves).
type remoteNames struct {
	mu     sync.Mutex
	byInst map[string][]string
	owner  map[string]string // name → instance
	asked  time.Time         // last refresh asked for by an unknown name
}

func newRemoteNames() *remoteNames {
	return &remoteNames{byInst: map[string][]string{}, owner: map[string]string{}}
}

func (rn *remoteNames) lookup(name string) (string, bool) {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	inst, ok := rn.owner[name]
	return inst, ok
}

func (rn *remoteNames) of(inst string) []string {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return append([]string(nil), rn.byInst[inst]...)
}

// mayRefresh rate-limits refreshes asked for by unknown names, so a
// client sending nonsense cannot make the router hammer the servers.
func (rn *remoteNames) mayRefresh() bool {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	if time.Since(rn.asked) < time.Second {
		return false
	}
	rn.asked = time.Now()
	return true
}

func (rn *remoteNames) set(inst string, names []string) {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	for n, o := range rn.owner {
		if o == inst {
			delete(rn.owner, n)
		}
	}
	var kept []string
	for _, n := range names {
		if _, taken := rn.owner[n]; !taken {
			rn.owner[n] = inst
			kept = append(kept, n)
		}
	}
	rn.byInst[inst] = kept
}

// discover asks a router-mode instance which models it serves.
func (r *Router) discover(t *Target) {
	names, err := listModels(t)
	if err != nil {
		r.o.P.Warnf("router: cannot list the models of %s (llama.cpp router mode): %v", t.Name, err)
		return
	}
	// Configured names win over listed ones.
	table := r.table.Load()
	kept := names[:0]
	for _, n := range names {
		if _, ok := table.Target(n); !ok {
			kept = append(kept, n)
		}
	}
	r.remote.set(t.Name, kept)
}

func listModels(t *Target) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL+"/models", nil)
	if err != nil {
		return nil, err
	}
	if t.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+t.APIKey)
	}
	resp, err := directClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /models: %s", resp.Status)
	}
	var list struct {
		Data []struct {
			ID      string   `json:"id"`
			Aliases []string `json:"aliases"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, fmt.Errorf("GET /models: %w", err)
	}
	var names []string
	for _, m := range list.Data {
		if m.ID != "" {
			names = append(names, m.ID)
		}
		names = append(names, m.Aliases...)
	}
	return names, nil
}

// directClient reaches instances on this machine: no environment proxy,
// no redirects.
var directClient = &http.Client{
	Transport:     &http.Transport{Proxy: nil},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}
