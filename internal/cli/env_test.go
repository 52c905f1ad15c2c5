package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/llamaboot/llamaboot/internal/printer"
)

func TestSwitch(t *testing.T) {
	for v, want := range map[string]bool{"1": true, "true": true, "TRUE": true, " True ": true, "0": false, "false": false, "": false, "yes": false, "2": false} {
		var errb bytes.Buffer
		p := printer.New(&bytes.Buffer{}, &errb, "", false)
		got := Switch(func(string) string { return v }, "X", p)
		if got != want {
			t.Errorf("Switch(%q) = %v", v, got)
		}
		warned := strings.Contains(errb.String(), "neither")
		if wantWarn := v == "yes" || v == "2"; warned != wantWarn {
			t.Errorf("Switch(%q): warned %v", v, warned)
		}
	}
}
