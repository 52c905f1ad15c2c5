package config

import (
	"encoding/hex"
	"fmt"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/llamaboot/llamaboot/internal/fetch"
)

// ModelSource is a model llamaboot downloads before the instance starts
// (llamaboot extension): `model = "https://…"` with an optional
// `model_sha256`, or `model = "models.NAME"` naming a [models.NAME] table
// (`url`, `sha256`, `path`) that several instances can share.
type ModelSource struct {
	Name   string   `json:"name,omitempty"` // NAME of [models.NAME]; "" for a URL given inline
	URL    string   `json:"-"`              // may carry secrets: never printed
	Shown  string   `json:"url"`            // URL redacted
	SHA256 []string `json:"sha256,omitempty"`
	Path   string   `json:"path"` // the local file passed to llama-server as --model
	// Parts is the number of files of a split GGUF (…-00001-of-0000N.gguf),
	// 1 otherwise. SHA256 holds one digest for the first file, or one per
	// part.
	Parts int `json:"parts"`
	// TokenEnv names the variable holding the bearer token for this
	// model's URL (token_env); "" when the model names none.
	TokenEnv string `json:"token_env,omitempty"`
}

var (
	modelKeys   = []string{"url", "sha256", "path", "token_env"}
	envNameRE   = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`) })
	splitNameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`-(\d{5})-of-(\d{5})\.gguf$`) })
)

const modelRefPrefix = "models."

// MaxParts bounds the parts of a split model: llama.cpp's gguf-split makes
// tens of them, and a name claiming more would fetch that many files.
const MaxParts = 512

// models validates the [models] tables and returns them by name.
func (v *validator) models(t *Table, dir string) map[string]*ModelSource {
	out := map[string]*ModelSource{}
	for _, name := range t.Keys() {
		path := "models." + name
		if !namePattern().MatchString(name) {
			v.add(t, "models", name, "model name must match [A-Za-z0-9][A-Za-z0-9._-]*")
			continue
		}
		m := v.table(t, "models", name)
		v.only(m, path, modelKeys)
		raw, ok := m.Get("url")
		if !ok {
			v.problems = append(v.problems, Problem{Pos: m.Pos, Key: path + ".url", Msg: "missing: give the http(s) URL of the .gguf file"})
			continue
		}
		u, _ := raw.(string)
		src := v.modelURL(m, path, "url", u, dir)
		if src == nil {
			continue
		}
		src.Name = name
		if p, ok := m.Get("path"); ok {
			s, isStr := p.(string)
			switch {
			case !isStr || s == "":
				v.add(m, path, "path", "must be the local file name for the model (absolute, or relative to the models dir), not %s", describe(p))
			case src.Parts > 1 && !strings.HasSuffix(s, fmt.Sprintf("-00001-of-%05d.gguf", src.Parts)):
				v.add(m, path, "path", "%q must end in -00001-of-%05d.gguf like the URL: llama-server finds the other parts by that name", s, src.Parts)
			case !filepath.IsAbs(s) && !filepath.IsLocal(s):
				// A relative path is under the models dir, and only there;
				// a file elsewhere is named by its absolute path.
				v.add(m, path, "path", "%q leaves the models dir: give a path under it, or an absolute path to put the model elsewhere", s)
			default:
				if !filepath.IsAbs(s) {
					s = filepath.Join(dir, s)
				}
				src.Path = filepath.Clean(s)
			}
		}
		src.SHA256 = v.pins(m, path, "sha256", src.Parts)
		if te, ok := m.Get("token_env"); ok {
			if s, isStr := te.(string); isStr && envNameRE().MatchString(s) {
				src.TokenEnv = s
			} else {
				v.add(m, path, "token_env", "must name the environment variable holding this model's token (such as \"MY_HOST_TOKEN\"), not %s", describe(te))
			}
		}
		out[name] = src
	}
	return out
}

// modelURL checks a model URL and returns its source with the default
// path (<models dir>/<file name>), or nil after reporting a problem.
func (v *validator) modelURL(t *Table, path, key, raw, dir string) *ModelSource {
	u, err := url.Parse(raw)
	if err != nil || !fetch.IsURL(raw) || u.Host == "" {
		v.add(t, path, key, "must be an http(s) URL of a .gguf file, not %s", describe(t.val(key)))
		return nil
	}
	name := urlFileName(u.Path)
	if name == "" {
		v.add(t, path, key, "%s names no file; give the URL of the .gguf file itself", fetch.Redact(raw))
		return nil
	}
	src := &ModelSource{URL: raw, Shown: fetch.Redact(raw), Path: filepath.Join(dir, name), Parts: 1}
	if m := splitNameRE().FindStringSubmatch(name); m != nil {
		if m[1] != "00001" {
			v.add(t, path, key, "%s is part %s of a split model; name the first part (-00001-of-%s.gguf): llamaboot fetches them all", src.Shown, m[1], m[2])
			return nil
		}
		src.Parts, _ = strconv.Atoi(m[2])
		if src.Parts < 1 || src.Parts > MaxParts {
			v.add(t, path, key, "%s says it is one of %d parts; a split model has 1 to %d parts", src.Shown, src.Parts, MaxParts)
			return nil
		}
	} else if !strings.HasSuffix(strings.ToLower(name), ".gguf") {
		v.warn(t, path, key, "%s does not end in .gguf", src.Shown)
	}
	return src
}

// urlFileName is the last element of a URL path, "" when there is none.
func urlFileName(p string) string {
	b := path.Base(p)
	if b == "/" || b == "." || b == ".." {
		return ""
	}
	return b
}

// pins reads a sha256 key: one digest (the file, or a split's first part)
// or a list with one per part.
func (v *validator) pins(t *Table, path, key string, parts int) []string {
	raw, ok := t.Get(key)
	if !ok {
		return nil
	}
	var list []any
	switch x := raw.(type) {
	case string:
		list = []any{x}
	case []any:
		list = x
		if len(x) != 1 && len(x) != parts {
			v.add(t, path, key, "lists %d digests for a model of %d file(s); give one (for the first file) or one per part", len(x), parts)
			return nil
		}
	default:
		v.add(t, path, key, "must be a SHA-256 hex digest (64 hex characters) or a list of them, not %s", describe(raw))
		return nil
	}
	var out []string
	for _, item := range list {
		s, _ := item.(string)
		s = strings.ToLower(strings.TrimSpace(s))
		if b, err := hex.DecodeString(s); err != nil || len(b) != 32 {
			v.add(t, path, key, "%s is not a SHA-256 hex digest (64 hex characters)", describe(item))
			return nil
		}
		out = append(out, s)
	}
	return out
}

// modelSource resolves an instance's model: a URL, a models.NAME
// reference, or (nil) a plain path that stays as written.
func (v *validator) modelSource(name string, control, server *Table, models map[string]*ModelSource, haveModels bool, dir string) *ModelSource {
	path := "instance." + name
	raw, _ := server.val("model").(string)
	pinTable, pinPath := server, path+".server"
	if _, ok := server.Get("model_sha256"); !ok {
		pinTable, pinPath = control, path+".control"
	}
	_, pinned := pinTable.Get("model_sha256")
	switch {
	case fetch.IsURL(raw):
		src := v.modelURL(server, path+".server", "model", raw, dir)
		if src != nil {
			src.SHA256 = v.pins(pinTable, pinPath, "model_sha256", src.Parts)
		}
		return src
	case isModelRef(raw, haveModels):
		ref := strings.TrimPrefix(raw, modelRefPrefix)
		src, ok := models[ref]
		if !ok {
			names := make([]string, 0, len(models))
			for n := range models {
				names = append(names, n)
			}
			hint := ""
			if s := suggest(ref, names); s != "" {
				hint = fmt.Sprintf(" (did you mean %q?)", modelRefPrefix+s)
			}
			v.add(server, path+".server", "model", "%q names no [models.%s] table%s", raw, ref, hint)
			return nil
		}
		if pinned {
			v.add(pinTable, pinPath, "model_sha256", "the model comes from [models.%s]: put its digest there as sha256", ref)
		}
		return src
	}
	if pinned {
		v.add(pinTable, pinPath, "model_sha256", "applies only to a model given by URL; model is %s", describe(server.val("model")))
	}
	return nil
}

// isModelRef tells a models.NAME reference from a path: only a file with
// [models.*] tables has references, and a name holds no "/" and does not
// end in .gguf, so existing files keep their meaning.
func isModelRef(s string, haveModels bool) bool {
	return haveModels && strings.HasPrefix(s, modelRefPrefix) && !strings.Contains(s, "/") && !strings.HasSuffix(strings.ToLower(s), ".gguf")
}

// checkModelPaths refuses two different URLs downloading to one file.
func (v *validator) checkModelPaths(p *Plan) {
	seen := map[string]*ModelSource{}
	for _, in := range p.Instances {
		src := in.ModelSource
		if src == nil {
			continue
		}
		if prev, ok := seen[src.Path]; ok && prev.URL != src.URL {
			v.problems = append(v.problems, Problem{Pos: in.modelPos, Key: "instance." + in.Name + ".server.model",
				Msg: fmt.Sprintf("%s and %s would both be downloaded to %s; give one of them its own path in a [models.NAME] table", prev.Shown, src.Shown, src.Path)})
			continue
		}
		seen[src.Path] = src
	}
}
