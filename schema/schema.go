// Package schema ships the JSON Schema of the llama.cpp instance file, for
// editors and CI pipelines that check configs without running llamaboot.
package schema

import _ "embed"

// ConfigJSON is the JSON Schema (draft 2020-12) of the instance file.
//
//go:embed llama-cpp-config.schema.json
var ConfigJSON []byte
