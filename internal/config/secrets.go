package config

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
)

// Redacted stands for a secret in anything llamaboot prints or writes.
const Redacted = "***"

// secretFlag says whether a flag's value is a secret: --api-key, --hf-token
// and any other flag named for a key or token. Flags naming a file
// (--api-key-file, --ssl-key-file) hold a path, which is shown.
func secretFlag(flag string) bool {
	if !strings.HasPrefix(flag, "-") {
		return false
	}
	name := strings.ToLower(strings.TrimLeft(flag, "-"))
	if strings.HasSuffix(name, "-file") {
		return false
	}
	return name == "hft" || strings.Contains(name, "key") || strings.Contains(name, "token")
}

// secretVar says whether an environment variable holds a secret.
func secretVar(name string) bool {
	n := strings.ToUpper(name)
	if strings.HasSuffix(n, "_FILE") {
		return false
	}
	return strings.Contains(n, "KEY") || strings.Contains(n, "TOKEN") || strings.Contains(n, "SECRET") || strings.Contains(n, "PASSWORD")
}

// RedactArgs returns args with the value of every secret flag replaced by
// Redacted: the form to print, log or show in status.
func RedactArgs(args []string) []string {
	out := make([]string, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if flag, _, ok := strings.Cut(a, "="); ok && secretFlag(flag) {
			out[i] = flag + "=" + Redacted
			continue
		}
		out[i] = a
		if secretFlag(a) && i+1 < len(args) {
			i++
			out[i] = Redacted
		}
	}
	return out
}

// RedactEnv returns env with the value of every secret variable replaced.
func RedactEnv(env map[string]string) map[string]string {
	if env == nil {
		return nil
	}
	out := make(map[string]string, len(env))
	for k, v := range env {
		if secretVar(k) {
			v = Redacted
		}
		out[k] = v
	}
	return out
}

// Redacted returns the instance as it may be shown: secret flag values
// and variables replaced by Redacted.
func (in Instance) Redacted() Instance {
	in.Cmd = RedactArgs(in.Cmd)
	in.Env = RedactEnv(in.Env)
	return in
}

// flagValue is the value of the last occurrence of flag (any of names) on
// the command line, and whether it is there.
func flagValue(cmd []string, names ...string) (string, bool) {
	val, found := "", false
	for i := 0; i < len(cmd); i++ {
		for _, n := range names {
			if v, ok := strings.CutPrefix(cmd[i], n+"="); ok {
				val, found = v, true
			} else if cmd[i] == n && i+1 < len(cmd) {
				val, found = cmd[i+1], true
			}
		}
	}
	return val, found
}

func hasAnyFlag(cmd []string, names ...string) bool {
	_, ok := flagValue(cmd, names...)
	if ok {
		return true
	}
	for _, a := range cmd {
		for _, n := range names {
			if a == n {
				return true
			}
		}
	}
	return false
}

// RouterMode says whether the instance runs llama.cpp's own router: a
// models_dir (or models_preset) and no model of its own. Such a server
// starts a child server per model it loads; its /slots and /metrics need a
// model name (and /slots?model=X would load X).
func (in Instance) RouterMode() bool {
	_, dir := flagValue(in.Cmd, "--models-dir", "--models-preset")
	_, dirEnv := in.Env["LLAMA_ARG_MODELS_DIR"]
	if !dir && !dirEnv {
		return false
	}
	_, modelEnv := in.Env["LLAMA_ARG_MODEL"]
	return !modelEnv && !hasAnyFlag(in.Cmd, "-m", "--model", "-mu", "--model-url", "-hf", "-hfr", "--hf-repo")
}

// ErrNoAPIKey is an instance that serves without an API key.
var ErrNoAPIKey = errors.New("no API key")

// maxKeyFile bounds what is read of an api_key_file.
const maxKeyFile = 64 << 10

// APIKey is the key llamaboot sends (as Authorization: Bearer) to the
// instance's server: the first of --api-key's comma-separated keys, else
// the first line of --api-key-file, else LLAMA_API_KEY from its
// environment. ErrNoAPIKey when it has none.
func (in Instance) APIKey() (string, error) {
	if v, ok := flagValue(in.Cmd, "--api-key"); ok {
		return firstKey(strings.Split(v, ","))
	}
	if v, ok := in.Env["LLAMA_API_KEY"]; ok {
		return firstKey(strings.Split(v, ","))
	}
	path, ok := flagValue(in.Cmd, "--api-key-file")
	if !ok {
		path, ok = in.Env["LLAMA_ARG_API_KEY_FILE"]
	}
	if !ok {
		return "", ErrNoAPIKey
	}
	lines, err := readKeyFile(path)
	if err != nil {
		return "", fmt.Errorf("api_key_file %s: %w", path, err)
	}
	return firstKey(lines)
}

func firstKey(keys []string) (string, error) {
	for _, k := range keys {
		if k = strings.TrimSpace(k); k != "" {
			return k, nil
		}
	}
	return "", ErrNoAPIKey
}

// readKeyFile reads the lines of a key file: a regular file, never a FIFO
// or device (opened without blocking), at most maxKeyFile bytes.
func readKeyFile(path string) ([]string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s)", st.Mode().Type())
	}
	var lines []string
	sc := bufio.NewScanner(io.LimitReader(f, maxKeyFile))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines, sc.Err()
}
