package router

import (
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// errModelType is a body whose top-level model is neither a string nor
// null.
var errModelType = errors.New(`its "model" is not a string`)

// modelOf finds the model a JSON request body names: the value of the
// last top-level member whose key is exactly "model" (case matters, as
// for llama-server and llama-swap; a later duplicate wins, as it does for
// llama-server's parser and for a Go map), "" when there is none, it is
// null, or the body is null. A body that is not valid JSON, or whose
// top level is not an object, or whose model is not a string, is an
// error. It agrees with decoding the body into an interface{} with
// encoding/json (FuzzModelOf), without building anything: the body is
// checked by json.Valid and then walked once at the top level, and only a
// key or value with escapes is decoded.
func modelOf(body []byte) (string, error) {
	if !json.Valid(body) {
		var v any
		err := json.Unmarshal(body, &v) // the same refusal, said by encoding/json
		if err == nil {
			err = errors.New("invalid JSON")
		}
		return "", err
	}
	i := skipSpace(body, 0)
	switch body[i] {
	case 'n':
		return "", nil // null
	case '{':
	default:
		return "", errors.New("it is not a JSON object")
	}
	i = skipSpace(body, i+1)
	model, typeErr := "", false
	for body[i] != '}' {
		// A member: "key" : value, then , or }. The body is valid JSON,
		// so only strings and nesting need care.
		end := stringEnd(body, i)
		key := body[i:end]
		i = skipSpace(body, end)
		i = skipSpace(body, i+1) // the colon
		vEnd := valueEnd(body, i)
		if isModelKey(key) {
			switch body[i] {
			case '"':
				model, typeErr = decodeString(body[i:vEnd]), false
			case 'n':
				model, typeErr = "", false
			default:
				model, typeErr = "", true
			}
		}
		i = skipSpace(body, vEnd)
		if body[i] == ',' {
			i = skipSpace(body, i+1)
		}
	}
	if typeErr {
		return "", errModelType
	}
	return model, nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd is the index just past the string token starting at b[i]
// (a quote).
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// valueEnd is the index just past the value starting at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = stringEnd(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return len(b)
	}
	// A number, true, false or null: up to the next delimiter.
	for ; i < len(b); i++ {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
	}
	return i
}

// isModelKey says whether a key token (quotes included) is "model", with
// escapes decoded.
func isModelKey(tok []byte) bool {
	if string(tok) == `"model"` {
		return true
	}
	for _, c := range tok {
		if c == '\\' {
			return decodeString(tok) == "model"
		}
	}
	return false
}

// decodeString is the value of a valid string token: its bytes when it
// has no escapes and is valid UTF-8, else as encoding/json decodes it
// (escapes, invalid bytes as U+FFFD).
func decodeString(tok []byte) string {
	raw := tok[1 : len(tok)-1]
	plain := utf8.Valid(raw)
	for _, c := range raw {
		if c == '\\' {
			plain = false
			break
		}
	}
	if plain {
		return string(raw)
	}
	var s string
	_ = json.Unmarshal(tok, &s) // cannot fail: json.Valid passed the whole body
	return s
}
