package cli

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/llamaboot/llamaboot/internal/control"
)

// TestStatusTableAligned prints instances with names and reasons of many
// lengths (a start failure names paths): every row's LOG starts under
// the header's, and a reason too long for its column is said in full
// under its row.
func TestStatusTableAligned(t *testing.T) {
	var ins []control.InstanceStatus
	for i, n := range []int{0, 1, 39, 40, 41, 200} {
		name := fmt.Sprintf("i%d", i) + strings.Repeat("n", i*7) // up to 37 characters: wider than the column
		reason := strings.Repeat("é", n)
		ins = append(ins, control.InstanceStatus{Name: name, State: "failed", Port: 1000 + i, LastReason: "start failed", Error: reason, LogFile: "/logs/" + name + ".log"})
	}
	ins[5].Error = "line one\nline two " + strings.Repeat("x", 50)
	var b bytes.Buffer
	printStatus(&b, t.TempDir(), "/sock", control.Status{Supervisor: &control.SupervisorInfo{PID: 1}, Instances: ins}, nil)
	out := b.String()
	lines := strings.Split(out, "\n")
	col := -1
	for _, l := range lines {
		if strings.HasPrefix(l, "INSTANCE ") {
			col = strings.Index(l, " LOG") + 1
		}
	}
	if col <= 0 {
		t.Fatalf("no header:\n%s", out)
	}
	for _, in := range ins {
		found := false
		for _, l := range lines {
			if strings.HasPrefix(l, in.Name+" ") {
				found = true
				if r := []rune(l); len(r) < col || string(r[col:]) != in.LogFile {
					t.Errorf("row %s: log not at column %d:\n%s", in.Name, col, out)
				}
			}
		}
		if !found {
			t.Errorf("no row for %s:\n%s", in.Name, out)
		}
		why := lastExit(in)
		if len([]rune(why)) > whyWidth && !strings.Contains(out, "  last exit (why): "+strings.Join(strings.Fields(why), " ")+"\n") {
			t.Errorf("%s: the long reason is not said in full:\n%s", in.Name, out)
		}
	}
}
