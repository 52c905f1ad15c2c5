package launch

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// InterpreterError is an executable the kernel would not start because
// the program interpreter (dynamic loader) its ELF header names is not
// there: exec says ENOENT although the file itself exists.
type InterpreterError struct {
	Executable, Interpreter string
	Err                     error // exec's own error
}

func (e *InterpreterError) Error() string {
	return fmt.Sprintf("%s exists, but its program interpreter %s is not in this container (a FROM scratch image needs the C libraries: see README)", e.Executable, e.Interpreter)
}

func (e *InterpreterError) Unwrap() error { return e.Err }

// ExplainStart turns exec's "no such file or directory" for an executable
// that exists into what is really missing: the program interpreter its
// PT_INTERP names. Any other error is returned as it is.
func ExplainStart(exe string, err error) error {
	if err == nil || !errors.Is(err, syscall.ENOENT) {
		return err
	}
	if fi, serr := os.Stat(exe); serr != nil || !fi.Mode().IsRegular() {
		return err
	}
	interp := Interpreter(exe)
	if interp == "" {
		return err
	}
	if _, serr := os.Stat(interp); !errors.Is(serr, os.ErrNotExist) {
		return err // there after all: something else is missing
	}
	return &InterpreterError{Executable: exe, Interpreter: interp, Err: err}
}

// Interpreter is the program interpreter exe's ELF header names
// (PT_INTERP), or "" for a static executable or a file that is not ELF.
func Interpreter(exe string) string {
	f, err := elf.Open(exe)
	if err != nil {
		return ""
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, min(p.Filesz, 4096))
		n, _ := p.ReadAt(b, 0)
		return strings.TrimRight(string(b[:n]), "\x00")
	}
	return ""
}
