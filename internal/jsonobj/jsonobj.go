// Package jsonobj reads JSON objects from registries strictly, for the
// sources whose registrations are JSON values (etcd, ZooKeeper). It is pure.
// Registry data is untrusted: a repeated key, invalid UTF-8, data after the
// object or a member of the wrong type is an error naming the member,
// never a silently chosen interpretation (encoding/json would keep the last
// of two repeated keys, fold key case and replace invalid UTF-8).
package jsonobj

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// Object splits a JSON object into its members, keys matched exactly.
func Object(data []byte) (map[string]json.RawMessage, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if tok != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	m := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("bad JSON: %w", err)
		}
		key, _ := tok.(string) // inside an object, a key is always a string
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("bad JSON: %w", err)
		}
		if _, dup := m[key]; dup {
			return nil, fmt.Errorf("key %s appears twice", Clip(key))
		}
		m[key] = v
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, fmt.Errorf("bad JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	return m, nil
}

// FoldField returns the member whose key equals name in any ASCII case, as
// cJSON (nginx-upsync) finds it; two such members are ambiguous and an
// error.
func FoldField(f map[string]json.RawMessage, name string) (json.RawMessage, error) {
	var found json.RawMessage
	n := 0
	for k, v := range f {
		if asciiEqualFold(k, name) {
			found = v
			n++
		}
	}
	if n > 1 {
		return nil, fmt.Errorf("key %s appears twice (keys are matched in any case)", Clip(name))
	}
	return found, nil
}

// asciiEqualFold is strings.EqualFold restricted to ASCII letters: "K"
// (Kelvin sign) must not match "k".
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// Kind names the type of a JSON value ("" when absent).
func Kind(v json.RawMessage) string {
	if len(v) == 0 {
		return ""
	}
	switch v[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// Article puts "a" or "an" before a Kind.
func Article(kind string) string {
	if kind == "object" || kind == "array" {
		return "an " + kind
	}
	return "a " + kind
}

// DecodeString decodes a JSON string value.
func DecodeString(v json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", err
	}
	return s, nil
}

// String returns a string member and whether it is set (null is unset).
func String(f map[string]json.RawMessage, key string) (string, bool, error) {
	v := f[key]
	switch k := Kind(v); k {
	case "", "null":
		return "", false, nil
	case "string":
		s, err := DecodeString(v)
		if err != nil {
			return "", false, fmt.Errorf("%s: %w", key, err)
		}
		return s, true, nil
	default:
		return "", false, fmt.Errorf("%s is %s, want a string", key, Article(k))
	}
}

// Int returns an integer member and whether it is set. Only a plain JSON
// integer that fits in 32 bits is accepted: no strings, fractions or
// exponents.
func Int(f map[string]json.RawMessage, key string) (int, bool, error) {
	v := f[key]
	switch k := Kind(v); k {
	case "", "null":
		return 0, false, nil
	case "number":
		n, err := strconv.ParseInt(string(v), 10, 32)
		if err != nil {
			return 0, false, fmt.Errorf("%s %s is not a 32-bit integer", key, Clip(string(v)))
		}
		return int(n), true, nil
	default:
		return 0, false, fmt.Errorf("%s is %s, want a number", key, Article(k))
	}
}

// Bool returns a JSON boolean member and whether it is set.
func Bool(f map[string]json.RawMessage, key string) (bool, bool, error) {
	v := f[key]
	switch k := Kind(v); k {
	case "", "null":
		return false, false, nil
	case "boolean":
		return string(v) == "true", true, nil
	default:
		return false, false, fmt.Errorf("%s is %s, want true or false", key, Article(k))
	}
}

// StringList returns a member that must be a list of strings (or null).
func StringList(f map[string]json.RawMessage, key string) ([]string, error) {
	v := f[key]
	switch k := Kind(v); k {
	case "", "null":
		return nil, nil
	case "array":
		var raw []json.RawMessage
		if err := json.Unmarshal(v, &raw); err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		out := make([]string, 0, len(raw))
		for i, e := range raw {
			if k := Kind(e); k != "string" {
				return nil, fmt.Errorf("%s[%d] is %s, want a string", key, i, Article(k))
			}
			s, err := DecodeString(e)
			if err != nil {
				return nil, fmt.Errorf("%s[%d]: %w", key, i, err)
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%s is %s, want a list of strings", key, Article(k))
	}
}

// StringMap returns a member that must be an object of strings (or null).
func StringMap(f map[string]json.RawMessage, key string) (map[string]string, error) {
	v := f[key]
	switch k := Kind(v); k {
	case "", "null":
		return nil, nil
	case "object":
		m, err := Object(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		out := make(map[string]string, len(m))
		for mk, mv := range m {
			if k := Kind(mv); k != "string" {
				return nil, fmt.Errorf("%s.%s is %s, want a string", key, Clip(mk), Article(k))
			}
			s, err := DecodeString(mv)
			if err != nil {
				return nil, fmt.Errorf("%s.%s: %w", key, Clip(mk), err)
			}
			out[mk] = s
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%s is %s, want an object of strings", key, Article(k))
	}
}

// Clip quotes an untrusted string for an error or log message, cut to a
// length that keeps log lines readable.
func Clip(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}
