// Package split is the model of traffic splits between an upstream and
// its groups (blue/green, canary): a Rule sends the requests that match a
// header or cookie, and a share of the others, from upstream `web` to a
// group's upstream such as `web_canary` (instances tagged gray=canary).
//
// It validates rules from the configuration and from Consul KV, and
// renders them in the text the Lua module's split API takes and answers
// (nginx/lua/swallowkeeper/split.lua), so that the daemon can compare what
// a target holds with what it should hold byte for byte. Standard library
// only, no I/O.
package split

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Rule routes part of one upstream's requests to another upstream.
type Rule struct {
	// To is the group's upstream, e.g. web_canary.
	To string `yaml:"to" json:"to"`
	// Percent of the requests that match nothing go to To: 0 to 100, at
	// most two decimals.
	Percent float64 `yaml:"percent" json:"percent"`
	// Sticky picks what decides a request's side of the share: "" (each
	// request at random), "addr" (the client address), "header:NAME" or
	// "cookie:NAME" (a hash of that value; requests without it are drawn
	// at random).
	Sticky string `yaml:"sticky" json:"sticky,omitempty"`
	// Match sends every request with one of these header or cookie values
	// to To, whatever the share.
	Match Match `yaml:"match" json:"match,omitzero"`
}

// Match lists exact header and cookie values, by name.
type Match struct {
	Header Values `yaml:"header" json:"header,omitempty"`
	Cookie Values `yaml:"cookie" json:"cookie,omitempty"`
}

// Values maps header or cookie names to the value to match.
type Values map[string]string

// String writes v as YAML's flow style, sorted: {X-Canary: 1}; {} when
// empty.
func (v Values) String() string {
	parts := make([]string, 0, len(v))
	for _, k := range sortedNames(v) {
		parts = append(parts, k+": "+v[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// Table is every rule, by the name of the upstream it splits.
type Table map[string]Rule

// Limits of a rule's names and values.
const (
	MaxToken = 64  // header and cookie names
	MaxValue = 256 // values to match
	MaxMatch = 32  // header and cookie matches together
	scale    = 100 // Percent is sent in hundredths
)

// Problem is one thing wrong with a rule: Upstream is the split's
// upstream (the rule's name, which may hold dots, so it is not parsed back
// out of Field); Field is relative to the rule ("to", "percent", "sticky",
// "match.header.X-Canary"; "" for the rule as a whole) in Check, and
// prefixed by the upstream in CheckTable.
type Problem struct {
	Upstream string
	Field    string
	Msg      string
}

func (p Problem) Error() string {
	if p.Field == "" {
		return p.Msg
	}
	return p.Field + ": " + p.Msg
}

// Check returns every problem of rule r for upstream name; none means the
// Lua module accepts it.
func Check(name string, r Rule) []Problem {
	var out []Problem
	bad := func(field, format string, args ...any) {
		out = append(out, Problem{name, field, fmt.Sprintf(format, args...)})
	}
	if err := upstream.ValidName(name); err != nil {
		bad("", "%v", err)
	}
	switch err := upstream.ValidName(r.To); {
	case r.To == "":
		bad("to", "the group's upstream is required, e.g. %s_canary", name)
	case err != nil:
		bad("to", "%v", err)
	case strings.EqualFold(r.To, name):
		bad("to", "%q is the split's own upstream", r.To)
	case !IsGroupOf(r.To, name):
		// Whoever writes a rule may move the traffic of one service only,
		// and only to that service's groups: anything else would let a
		// KV writer send web's requests to admin's backends.
		bad("to", "%q is not a group of %s: a split sends requests only to an upstream named %s_<group>", r.To, name, name)
	}
	if _, ok := hundredths(r.Percent); !ok {
		bad("percent", "%v: want 0 to 100, at most two decimals", r.Percent)
	}
	if _, _, err := ParseSticky(r.Sticky); err != nil {
		bad("sticky", "%v", err)
	}
	if n := len(r.Match.Header) + len(r.Match.Cookie); n > MaxMatch {
		bad("match", "%d matches: at most %d", n, MaxMatch)
	}
	for _, kind := range []struct {
		field string
		v     Values
	}{{"match.header", r.Match.Header}, {"match.cookie", r.Match.Cookie}} {
		folded := map[string]string{}
		for _, k := range sortedNames(kind.v) {
			field := kind.field + "." + k
			if !validToken(k) {
				bad(field, "%q: a name is 1 to %d token characters (letters, digits, !#$%%&'*+-.^_`|~)", k, MaxToken)
				continue
			}
			if prev, dup := folded[strings.ToLower(k)]; dup {
				bad(field, "same name as %q (names are case-insensitive)", prev)
			}
			folded[strings.ToLower(k)] = k
			if v := kind.v[k]; !validValue(v) {
				bad(field, "%q: a value is 1 to %d visible ASCII characters, no spaces", v, MaxValue)
			}
		}
	}
	return out
}

// CheckTable returns every problem of every rule, with Field prefixed by
// the upstream name, in name order; and a group that is itself split
// (web → web_canary → web_canary_x is one hop too far: nginx routes once).
func CheckTable(t Table) []Problem {
	var out []Problem
	for _, name := range sortedNames(t) {
		r := t[name]
		for _, p := range Check(name, r) {
			p.Field = strings.TrimSuffix(name+"."+p.Field, ".")
			out = append(out, p)
		}
		for other := range t {
			if strings.EqualFold(other, r.To) && !strings.EqualFold(other, name) {
				out = append(out, Problem{name, name + ".to", fmt.Sprintf("%q has a split of its own: a request is routed once, so a group cannot be split again", r.To)})
			}
		}
	}
	seen := map[string]string{}
	for _, name := range sortedNames(t) {
		if prev, dup := seen[strings.ToLower(name)]; dup {
			out = append(out, Problem{name, name, fmt.Sprintf("same upstream as %q (names are case-insensitive)", prev)})
		}
		seen[strings.ToLower(name)] = name
	}
	return out
}

// IsGroupOf says whether upstream to is one of upstream name's groups by
// its name: name, "_", then at least one character, compared without case
// as nginx compares upstream names. The Lua module applies the same rule.
func IsGroupOf(to, name string) bool {
	return len(to) > len(name)+1 && strings.EqualFold(to[:len(name)+1], name+"_")
}

// ParseSticky splits a Sticky value into its kind ("", "addr", "header",
// "cookie") and name.
func ParseSticky(s string) (kind, name string, err error) {
	switch {
	case s == "":
		return "", "", nil
	case s == "addr":
		return "addr", "", nil
	}
	kind, name, ok := strings.Cut(s, ":")
	if !ok || (kind != "header" && kind != "cookie") {
		return "", "", fmt.Errorf("%q: want addr, header:NAME or cookie:NAME", s)
	}
	if !validToken(name) {
		return "", "", fmt.Errorf("%q: the %s name is 1 to %d token characters", s, kind, MaxToken)
	}
	return kind, name, nil
}

// hundredths is p in hundredths of a percent, if p is 0..100 with at
// most two decimals.
func hundredths(p float64) (int, bool) {
	if math.IsNaN(p) || p < 0 || p > 100 {
		return 0, false
	}
	h := math.Round(p * scale)
	if math.Abs(h-p*scale) > 1e-6 {
		return 0, false
	}
	return int(h), true
}

// PercentText writes a share as the Lua module does: 10, 0.5, 12.25.
func PercentText(p float64) string {
	h, _ := hundredths(p)
	s := fmt.Sprintf("%d.%02d", h/scale, h%scale)
	return strings.TrimSuffix(strings.TrimRight(s, "0"), ".")
}

// Body renders a valid rule as the Lua module's split API takes it and
// as its GET answers it: the same directives, order and spelling.
func Body(r Rule) string {
	var b strings.Builder
	fmt.Fprintf(&b, "to %s\npercent %s\n", r.To, PercentText(r.Percent))
	if kind, name, _ := ParseSticky(r.Sticky); kind != "" {
		b.WriteString("sticky " + kind)
		if name != "" {
			b.WriteString(" " + name)
		}
		b.WriteByte('\n')
	}
	for _, m := range []struct {
		kind string
		v    Values
	}{{"header", r.Match.Header}, {"cookie", r.Match.Cookie}} {
		names := slices.Collect(maps.Keys(m.v))
		slices.SortFunc(names, func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) })
		for _, k := range names {
			fmt.Fprintf(&b, "%s %s %s\n", m.kind, k, m.v[k])
		}
	}
	return b.String()
}

// ParseList reads the Lua module's GET /split answer: per rule a line
// "split NAME", its body, then an empty line. It returns the bodies by
// lowercased name (split names are case-insensitive, like upstreams).
func ParseList(text string) (map[string]string, error) {
	out := map[string]string{}
	for block := range strings.SplitSeq(text, "\n\n") {
		if block == "" {
			continue
		}
		head, body, ok := strings.Cut(block, "\n")
		name, isSplit := strings.CutPrefix(head, "split ")
		if !ok || !isSplit || name == "" {
			return nil, fmt.Errorf("split list: want \"split NAME\" before each rule, got %q", head)
		}
		out[strings.ToLower(name)] = body + "\n"
	}
	return out, nil
}

// ParseJSON reads a rule as a Consul KV value holds it, e.g.
// {"to":"web_canary","percent":10,"sticky":"cookie:sid","match":{"header":{"X-Canary":"1"}}},
// strictly (unknown fields are errors), and checks it for upstream name.
func ParseJSON(name string, data []byte) (Rule, error) {
	var r Rule
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Rule{}, fmt.Errorf("split %s: %w", name, err)
	}
	if dec.More() {
		return Rule{}, fmt.Errorf("split %s: data after the JSON object", name)
	}
	if ps := Check(name, r); len(ps) > 0 {
		errs := make([]error, len(ps))
		for i, p := range ps {
			errs[i] = p
		}
		return Rule{}, fmt.Errorf("split %s: %w", name, errors.Join(errs...))
	}
	return r, nil
}

// Describe is a rule for people: "10% to web_canary (sticky cookie:sid),
// header X-Canary=1 → web_canary".
func Describe(r Rule) string {
	s := PercentText(r.Percent) + "% to " + r.To
	if r.Sticky != "" {
		s += " (sticky " + r.Sticky + ")"
	}
	var m []string
	for _, k := range sortedNames(r.Match.Header) {
		m = append(m, "header "+k+"="+r.Match.Header[k])
	}
	for _, k := range sortedNames(r.Match.Cookie) {
		m = append(m, "cookie "+k+"="+r.Match.Cookie[k])
	}
	if len(m) > 0 {
		s += "; " + strings.Join(m, ", ") + " → " + r.To
	}
	return s
}

func validToken(s string) bool {
	if len(s) < 1 || len(s) > MaxToken {
		return false
	}
	for i := range len(s) {
		c := s[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func validValue(s string) bool {
	if len(s) < 1 || len(s) > MaxValue {
		return false
	}
	for i := range len(s) {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func sortedNames[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
