// Command swapper is the attacker of the tests (internal/dirs,
// cmd/llamaboot) that check root never
// follows a user's links: run as uid 1000, it spins on the paths root will
// create or enter under a volume it owns, swapping each for a link to a
// root-only target and back, until its stdin closes: it pounces on a dir
// the moment root has created it.
//
// With SWAPPER_FILES=1 it swaps regular files too (its own included),
// holding the link and the file each up to 0.2ms, so a name root looked at
// as a file is a link an instant later.
//
// Usage: swapper VOL TARGET[:TARGET...] NAME[:NAME...] DEPTH
package main

import (
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	vol, targets, names := os.Args[1], strings.Split(os.Args[2], ":"), strings.Split(os.Args[3], ":")
	depth, _ := strconv.Atoi(os.Args[4])
	var cands []string
	var add func(p string, d int)
	add = func(p string, d int) {
		for _, n := range names {
			c := filepath.Join(p, n)
			cands = append(cands, c)
			if d < depth {
				add(c, d+1)
			}
		}
	}
	add(vol, 1)
	files := os.Getenv("SWAPPER_FILES") == "1"
	stop := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(stop) }()
	for {
		select {
		case <-stop:
			return
		default:
		}
		// Pounce on a dir root has just created (and now and then on one
		// of its own): swap it for a link and hold the link a moment, as
		// root goes on by path.
		p := cands[rand.IntN(len(cands))]
		var st syscall.Stat_t
		if files && syscall.Lstat(p, &st) == nil && st.Mode&syscall.S_IFMT == syscall.S_IFREG {
			if os.Rename(p, p+".swap") != nil {
				continue
			}
			os.Symlink(targets[rand.IntN(len(targets))], p)
			time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
			os.Remove(p)
			os.Rename(p+".swap", p)
			time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
			continue
		}
		if syscall.Lstat(p, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFDIR || st.Uid != 0 && rand.IntN(8) != 0 {
			continue
		}
		if os.Rename(p, p+".swap") != nil {
			continue
		}
		os.Symlink(targets[rand.IntN(len(targets))], p)
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
		os.Remove(p)
		os.Rename(p+".swap", p)
	}
}
