package preflight

import (
	"bytes"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
)

// Running is what llama-server said at its last start about the devices
// it runs on: its device_info list (the CPU included) and whether it found
// no usable GPU for the layers it was asked to offload.
type Running struct {
	Devices []Device
	NoGPU   bool
}

// logTail bounds how much of a log is read for the last start.
const logTail = 1 << 20

var deviceLine = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^\S*\s*[IWE]?\s+- (\S+)\s*: (.*)$`) })

// DevicesFromLog reads the devices an instance runs on from the tail of
// its log: the last "device_info:" block llama-server printed. ok is false
// when the log has none (not started yet, or not llama-server).
func DevicesFromLog(path string) (r Running, ok bool) {
	f, err := os.Open(path)
	if err != nil {
		return r, false
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > logTail {
		f.Seek(fi.Size()-logTail, io.SeekStart)
	}
	b, err := io.ReadAll(io.LimitReader(f, logTail))
	if err != nil {
		return r, false
	}
	i := bytes.LastIndex(b, []byte("device_info:"))
	if i < 0 {
		return r, false
	}
	// The warning comes a few lines before the list, in the same start:
	// after the previous start's system_info line, if any.
	from := max(0, i-2048)
	if k := bytes.LastIndex(b[:i], []byte("system_info:")); k > from {
		from = k
	}
	before := b[from:i]
	if j := bytes.LastIndex(before, []byte("no usable GPU found")); j >= 0 {
		r.NoGPU = true
	}
	lines := strings.Split(string(b[i:]), "\n")[1:]
	for _, l := range lines {
		m := deviceLine().FindStringSubmatch(l)
		if m == nil {
			break
		}
		r.Devices = append(r.Devices, Device{Name: m[1], Description: strings.TrimSpace(m[2])})
	}
	return r, len(r.Devices) > 0
}
