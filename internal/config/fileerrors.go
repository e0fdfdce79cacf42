package config

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// fileError is one problem of the configuration, kept with its line so
// that all problems print in the file's order.
type fileError struct {
	line  int    // 0: not from the file (flag, environment, missing key)
	field string // dotted key path ("consul.wait_time"); "" when unknown
	text  string // the whole message, "file:line: field: what is wrong"
}

// joinErrors returns the problems as one error, one per line, in the
// order of the file; problems without a line come last.
func (c *Config) joinErrors(errs []fileError) error {
	if len(errs) == 0 {
		return nil
	}
	slices.SortStableFunc(errs, func(a, b fileError) int {
		if (a.line == 0) != (b.line == 0) {
			if a.line == 0 {
				return 1
			}
			return -1
		}
		return a.line - b.line
	})
	list := make([]error, len(errs))
	for i, e := range errs {
		list[i] = errors.New(e.text)
	}
	return fmt.Errorf("config: %w", errors.Join(list...))
}

// withDecodeErrors adds the decoder's problems to Validate's, minus the
// findings about a key the decoder already refused: that key holds its
// default, and a second message about it would mislead.
func (c *Config) withDecodeErrors(errs []fileError) []fileError {
	out := slices.Clone(c.decodeErrs)
	for _, e := range errs {
		if !slices.ContainsFunc(c.decodeErrs, func(d fileError) bool { return d.field != "" && within(e.field, d.field) }) {
			out = append(out, e)
		}
	}
	return out
}

// within reports whether field is parent or below it.
func within(field, parent string) bool {
	rest, ok := strings.CutPrefix(field, parent)
	return ok && (rest == "" || rest[0] == '.' || rest[0] == '[')
}

var (
	unknownField = regexp.MustCompile(`^field (.+) not found in type (\S+)$`)
	wrongType    = regexp.MustCompile("^cannot unmarshal (!!\\w+)(?: `(.*)`)? into (.+)$")
)

// typeErrors turns the decoder's "line N: cannot unmarshal !!str `x` into
// int" into "file:N: upstreams.weight: want a whole number, got "x"".
func (c *Config) typeErrors(msgs []string, root *yaml.Node) []fileError {
	containers, scalars := map[string]int{}, map[string]string{}
	indexValues(root, "", containers, scalars)
	var out []fileError
	for _, m := range msgs {
		line := 0
		msg := m
		if sm := yamlLine.FindStringSubmatch(m); sm != nil {
			line, _ = strconv.Atoi(sm[1])
			msg = strings.TrimPrefix(m, sm[0])
		}
		field := ""
		switch sm := unknownField.FindStringSubmatch(msg); {
		case sm != nil:
			key, typ := sm[1], sm[2]
			field = pathAt(c.lines, line, key)
			msg = "unknown key" + unknownHint(typ, key)
		default:
			// The decoder gives the line of the value at fault: a list or
			// mapping is found by its own line, a scalar by its key's.
			lines := c.lines
			if sm := wrongType.FindStringSubmatch(msg); sm != nil && (sm[1] == "!!seq" || sm[1] == "!!map") || strings.HasPrefix(msg, durationNotScalar) {
				lines = containers
			}
			field = pathAt(lines, line, "")
			if sm := wrongType.FindStringSubmatch(msg); sm != nil {
				value := sm[2]
				if full, ok := scalars[field]; ok && strings.HasSuffix(value, "...") {
					value = full // the decoder cuts long values short
				}
				want := describeGoType(sm[3])
				msg = fmt.Sprintf("want %s, got %s", want, describeYAML(sm[1], value))
				if want == "a list" && sm[1] != "!!map" && value != "" {
					msg += fmt.Sprintf(" (a list of one is written [%s])", value)
				}
			}
		}
		text := msg
		if field != "" {
			text = field + ": " + msg
		}
		if c.path != "" && line > 0 {
			text = fmt.Sprintf("%s:%d: %s", c.path, line, text)
		} else if c.path != "" {
			text = c.path + ": " + text
		}
		out = append(out, fileError{line: line, field: field, text: text})
	}
	return out
}

// indexValues records, by dotted path, the line where each list or
// mapping value starts, and the text of each scalar value.
func indexValues(n *yaml.Node, path string, lines map[string]int, scalars map[string]string) {
	if n == nil {
		return
	}
	if path != "" && (n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode) {
		lines[path] = n.Line
	}
	switch n.Kind {
	case yaml.ScalarNode:
		scalars[path] = n.Value
	case yaml.DocumentNode:
		for _, c := range n.Content {
			indexValues(c, path, lines, scalars)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := n.Content[i].Value
			if path != "" {
				p = path + "." + p
			}
			indexValues(n.Content[i+1], p, lines, scalars)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			indexValues(c, fmt.Sprintf("%s[%d]", path, i), lines, scalars)
		}
	}
}

// syntaxHint says what usually causes the YAML parser's errors, whose
// words assume one knows the YAML grammar.
func syntaxHint(msg string, data []byte) string {
	switch {
	case strings.Contains(msg, "found character that cannot start any token"):
		if sm := yamlLine.FindStringSubmatch(msg); sm != nil {
			n, _ := strconv.Atoi(sm[1])
			lines := strings.Split(string(data), "\n")
			if n >= 1 && n <= len(lines) && strings.Contains(lines[n-1], "\t") {
				return " (a tab: YAML indents with spaces only)"
			}
		}
		return " (a value starting with @, ` or % needs quotes)"
	case strings.Contains(msg, "did not find expected key"):
		return " (a line of this block is indented differently from its neighbours)"
	case strings.Contains(msg, "mapping values are not allowed in this context"):
		return " (a value holding \": \" needs quotes, or a key is indented under a value)"
	case strings.Contains(msg, "did not find expected ',' or ']'"):
		return " (a [list] opened here is not closed)"
	}
	return ""
}

// pathAt names the key at line in lines (ending in key, when given). On a
// line holding several ([a, b] or {x: 1, y: 2}) it names their common
// parent.
func pathAt(lines map[string]int, line int, key string) string {
	var leaves []string
	for p, l := range lines {
		if l != line || key != "" && p != key && !strings.HasSuffix(p, "."+key) {
			continue
		}
		leaves = append(leaves, p)
	}
	// Keep the deepest: drop a path that is the parent of another.
	leaves = slices.DeleteFunc(leaves, func(p string) bool {
		return slices.ContainsFunc(leaves, func(q string) bool { return q != p && within(q, p) })
	})
	if len(leaves) == 0 {
		return ""
	}
	common := leaves[0]
	for _, p := range leaves[1:] {
		for common != "" && !within(p, common) {
			i := strings.LastIndexAny(common, ".[")
			if i < 0 {
				return ""
			}
			common = common[:i]
		}
	}
	return common
}

// describeGoType says in YAML words what a Go type takes.
func describeGoType(t string) string {
	switch {
	case t == "int" || strings.HasPrefix(t, "int") || strings.HasPrefix(t, "uint"):
		return "a whole number"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "a single value (text)"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map["), strings.Contains(t, "."): // map or struct
		return "a mapping (key: value lines)"
	}
	return t
}

// describeYAML says what the file holds: "heavy" for !!str `heavy`.
func describeYAML(tag, value string) string {
	switch tag {
	case "!!str":
		return strconv.Quote(value)
	case "!!seq":
		return "a list"
	case "!!map":
		return "a mapping"
	case "!!null":
		return "nothing"
	}
	if value != "" {
		return value
	}
	return strings.TrimPrefix(tag, "!!")
}

// unknownHint says what to write instead of an unknown key: where a
// secret goes, or the known key closest to a misspelt one.
func unknownHint(typ, key string) string {
	switch {
	case typ == "config.Consul" && key == "token":
		return " (the token never goes in this file: set $CONSUL_HTTP_TOKEN, or consul.token_file to a file holding it)"
	case typ == "config.Etcd" && key == "password":
		return " (the password never goes in this file: set etcd.password_file to a file holding it)"
	case strings.HasPrefix(typ, "config.Target") && key == "secret":
		return " (the secret never goes in this file: set secret_file to a file holding it)"
	}
	keys := knownKeys(typ)
	best, bestD := "", 3 // at most two edits away
	for _, k := range keys {
		if d := editDistance(strings.ToLower(key), k); d < bestD {
			best, bestD = k, d
		}
	}
	if best != "" {
		return "; did you mean " + best + "?"
	}
	if len(keys) > 0 {
		return "; known keys here: " + strings.Join(keys, ", ")
	}
	return ""
}

// knownKeys lists the keys a config type takes, by its Go name
// ("config.Consul").
func knownKeys(typ string) []string {
	var found reflect.Type
	seen := map[reflect.Type]bool{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] {
			return
		}
		seen[t] = true
		if t.String() == typ {
			found = t
		}
		for i := range t.NumField() {
			walk(t.Field(i).Type)
		}
	}
	walk(reflect.TypeOf(Config{}))
	if found == nil {
		return nil
	}
	var keys []string
	for i := range found.NumField() {
		f := found.Field(i)
		name := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if f.IsExported() && name != "" && name != "-" {
			keys = append(keys, name)
		}
	}
	return keys
}

// editDistance is the Levenshtein distance of two short keys.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// schemeless recognises a target written as host:port ("127.0.0.1:8081",
// "nginx.local:8081") and returns what to write instead. Go's URL parser
// would otherwise answer "first path segment in URL cannot contain colon",
// or take the host name for a scheme.
func schemeless(raw string) (string, bool) {
	if raw == "" || strings.Contains(raw, "://") || strings.HasPrefix(raw, "unix:") {
		return "", false
	}
	host, port, err := net.SplitHostPort(raw)
	if err != nil || port == "" || strings.ContainsAny(host, "/?#@") {
		return "", false
	}
	if host == "" {
		return "http://127.0.0.1" + raw, true
	}
	return "http://" + raw, true
}
