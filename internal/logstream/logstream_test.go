package logstream

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/llamaboot/llamaboot/internal/logfile"
)

// A `logs -f` reader too slow for the log is told how many lines it
// missed; the log itself never waits for it.
func TestSlowReaderIsToldWhatItMissed(t *testing.T) {
	l, err := logfile.OpenLog(filepath.Join(t.TempDir(), "a.log"), 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	_, f, _ := l.Follow(0, 2)
	for i := range 10 {
		fmt.Fprintf(l, "line %d\n", i)
	}
	l.Close()
	var buf bytes.Buffer
	(&lineWriter{w: &buf}).follow(context.Background(), "a", f)
	if want := "[llamaboot] 8 lines of a not shown here: this reader fell behind (they are in the log file)\nline 0\nline 1\n"; buf.String() != want {
		t.Errorf("got %q\nwant %q", buf.String(), want)
	}
}
