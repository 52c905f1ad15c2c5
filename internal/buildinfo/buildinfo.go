// Package buildinfo reports which llamaboot this is.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version and CommitStamp are set at link time (the Makefile does):
// -ldflags "-X github.com/llamaboot/llamaboot/internal/buildinfo.Version=v1.2.3
// -X github.com/llamaboot/llamaboot/internal/buildinfo.CommitStamp=<sha>".
var (
	Version     = "dev"
	CommitStamp = ""
)

// Commit returns the VCS revision the binary was built from: the link-time
// stamp, else what the go command recorded (a plain `go build` in a git
// checkout, unless -buildvcs=false), else "unknown".
func Commit() string {
	if CommitStamp != "" {
		return CommitStamp
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "unknown", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty {
		rev += "+dirty"
	}
	return rev
}

// String is the one-line version report.
func String() string {
	return fmt.Sprintf("llamaboot %s (commit %s, %s, %s/%s)", Version, Commit(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
