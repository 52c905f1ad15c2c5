package config

import "strings"

// ShellJoin shows a command line as a person would type it: words that
// need quoting get single quotes, so the line can be pasted into a shell.
func ShellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && !strings.ContainsAny(a, " \t\n'\"\\$`!*?[]{}()<>|&;#~") {
			out[i] = a
		} else {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}

// ArgChanges says which server keys differ between two command lines, in
// the config's words: "ctx_size 1024 → 2048", "no_webui added",
// "threads 4 removed". A flag given several times (a list) is one key
// with all its values.
func ArgChanges(a, b []string) []string {
	av, aOrder := argKeys(a)
	bv, bOrder := argKeys(b)
	var out []string
	for _, k := range aOrder {
		switch nv, ok := bv[k]; {
		case !ok:
			out = append(out, strings.TrimSpace(k+" "+shownValue(k, av[k]))+" removed")
		case nv != av[k] && secret(k):
			out = append(out, k+" changed")
		case nv != av[k]:
			out = append(out, k+" "+orSet(av[k])+" → "+orSet(nv))
		}
	}
	for _, k := range bOrder {
		if _, ok := av[k]; !ok {
			out = append(out, strings.TrimSpace(k+" "+shownValue(k, bv[k]))+" added")
		}
	}
	return out
}

// secret is a key whose value is a credential (api_key, hf_token, …): a
// reload report, printed and logged, names it without its value.
func secret(k string) bool {
	for _, w := range []string{"key", "token", "password", "secret"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

func shownValue(k, v string) string {
	if secret(k) {
		return ""
	}
	return v
}

func orSet(v string) string {
	if v == "" {
		return "(set)"
	}
	return v
}

// argKeys groups a command line by flag: the key a flag comes from (its
// name with "_" for "-"), mapped to its values as shown in a shell. Words
// before any flag belong to the key "args".
func argKeys(args []string) (map[string]string, []string) {
	vals := map[string]string{}
	var order []string
	key := "args"
	add := func(k, v string) {
		old, seen := vals[k]
		if !seen {
			order = append(order, k)
		}
		vals[k] = strings.TrimSpace(old + " " + v)
	}
	for _, w := range args {
		if isFlag(w) {
			key = strings.ReplaceAll(strings.TrimLeft(w, "-"), "-", "_")
			if _, seen := vals[key]; !seen {
				add(key, "")
			}
			continue
		}
		add(key, ShellJoin([]string{w}))
	}
	return vals, order
}

// isFlag tells a flag from a value: "-1" and "-0.5" are values.
func isFlag(w string) bool {
	return len(w) > 1 && w[0] == '-' && (w[1] < '0' || w[1] > '9') && w[1] != '.'
}
