package install

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/llamaboot/llamaboot/internal/access"
	"github.com/llamaboot/llamaboot/internal/appfile"
	"github.com/llamaboot/llamaboot/internal/printer"
)

// lockFile takes the app dir's install lock. Containers sharing a volume share
// the kernel, so flock serialises them too. A loser waits up to timeout,
// saying once who it waits for.
func lockFile(ctx context.Context, path string, timeout time.Duration, p *printer.Printer) (release func(), err error) {
	f, err := appfile.OpenLock(path)
	if err != nil {
		return nil, fmt.Errorf("install lock: %w", access.Explain(err, AppDirSetting))
	}
	deadline := time.Now().Add(timeout)
	said := false
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			holder := appfile.Holder(f)
			f.Close()
			return nil, fmt.Errorf("gave up after %s waiting for the install lock %s (%s; retry later)", timeout, path, heldBy(holder))
		}
		if !said {
			holder, _ := appfile.ReadFile(path, 64)
			p.Stepf("another install holds %s (pid %s); waiting up to %s", path, strings.TrimSpace(string(holder)), timeout)
			said = true
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("stopped waiting for the install lock %s: %w", path, context.Cause(ctx))
		}
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() {
		_ = f.Truncate(0)
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

// heldBy names the process holding a lock, as the kernel says.
func heldBy(pid int) string {
	if pid <= 0 {
		return "another install is still running"
	}
	who := "pid " + strconv.Itoa(pid)
	if comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm"); err == nil {
		who += " (" + strings.TrimSpace(string(comm)) + ")"
	}
	return "held by " + who
}
