// Package watch tells when a config file's content changes, by polling the
// hash of what its path resolves to. Polling is deliberate: inotify misses
// changes on bind mounts and network file systems, and Kubernetes updates a
// mounted ConfigMap by flipping a `..data` symlink, which leaves the watched
// path itself untouched.
package watch

import (
	"context"
	"crypto/sha256"
	"os"
	"time"
)

// Sum is the content hash of a file, or the zero Sum when it cannot be read.
type Sum [sha256.Size]byte

// Read hashes the file path resolves to now.
func Read(path string) (Sum, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Sum{}, err
	}
	return sha256.Sum256(b), nil
}

// Poll calls changed each time the content of path settles on something new:
// a content seen on two polls in a row that differs from the last one
// reported (or from initial, the content the caller is already running).
// Requiring two polls skips the half-written file of an editor that writes
// in place within a poll (one pausing longer can still be caught halfway:
// the README tells writers to rename a complete file into place). An unreadable path (deleted, mid-swap) is not a change; its
// return is. Poll returns when ctx ends.
func Poll(ctx context.Context, path string, every time.Duration, initial Sum, changed func(Sum)) {
	current := initial
	var pending Sum
	havePending := false
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sum, err := Read(path)
		switch {
		case err != nil || sum == current:
			havePending = false
		case havePending && sum == pending:
			current, havePending = sum, false
			changed(sum)
		default:
			pending, havePending = sum, true
		}
	}
}
