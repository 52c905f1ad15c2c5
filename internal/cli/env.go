package cli

import (
	"strings"

	"github.com/llamaboot/llamaboot/internal/printer"
)

// Switch reads a boolean variable as the old scripts did: 1/true (any case)
// is on; 0/false/empty is off; anything else is off with a warning.
func Switch(getenv Env, name string, p *printer.Printer) bool {
	v := strings.TrimSpace(getenv(name))
	switch strings.ToLower(v) {
	case "1", "true":
		return true
	case "", "0", "false":
		return false
	}
	p.Warnf("%s=%q is neither 1/true nor 0/false; treating it as false", name, v)
	return false
}
