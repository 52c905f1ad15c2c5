package router

import (
	"slices"
	"strings"
	"time"
)

// Member is one instance of a group as the eviction policy sees it.
type Member struct {
	Name     string
	Loaded   bool      // a process runs or is coming (starting, ready, restarting)
	Freeing  bool      // being stopped: still holds its memory, but will not serve again
	Idle     bool      // ready with no request in flight and none waiting for it
	LastUse  time.Time // last request finished (or it became ready)
	Starting bool      // a start was asked and is under way
}

// Capacity decides whether want may start now in a group of max members
// (members excludes want): start when it fits, counting those still
// freeing their memory; otherwise the least recently used idle members to
// stop so it will fit (stop them, then start want once they are down).
// No victims and no start: it must wait for a member to become idle.
// Members with requests in flight or waiting are never chosen.
func Capacity(want string, max int, members []Member) (start bool, victims []string) {
	held, freeing := 0, 0
	var idle []Member
	for _, m := range members {
		if m.Name == want {
			continue
		}
		switch {
		case m.Freeing:
			freeing++
		case m.Loaded || m.Starting:
			held++
			if m.Idle {
				idle = append(idle, m)
			}
		}
	}
	if held+freeing+1 <= max {
		return true, nil
	}
	need := held + 1 - max // members that are not already on their way out
	if need <= 0 {
		return false, nil // enough are freeing: wait for them
	}
	if len(idle) < need {
		return false, nil // evicting some would not make room: wait
	}
	slices.SortFunc(idle, func(a, b Member) int {
		if c := a.LastUse.Compare(b.LastUse); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	for _, m := range idle[:need] {
		victims = append(victims, m.Name)
	}
	return false, victims
}
