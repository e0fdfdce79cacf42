package consul

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
)

// checkList is the last answer of /v1/health/state/any, kept as the raw
// bytes Consul sent together with where each check lies in them.
//
// That watch is how the source learns which services changed without one
// long poll per service, but every wake returns every check of the
// datacenter: 10,000 instances make a 2.5–4.5 MB answer, and decoding it
// whole took about 70 ms of CPU on each single change. Consul encodes the
// list in a stable order with a deterministic encoder, so one changed check
// changes one small stretch of bytes. apply compares the new answer with
// the old one from both ends (a memory compare, well under a millisecond)
// and decodes only the checks in the stretch between: the bytes outside it
// are equal, so the checks there are equal too. Anything it cannot place
// falls back to decoding the whole answer, which is also how the first
// answer is read.
type checkList struct {
	body   []byte
	open   int    // offset of the array's '['
	close  int    // offset of the array's ']'
	spans  []span // where each element of checks lies in body
	checks []checkLite
}

type span struct{ from, to int }

// apply makes body the list's answer. It returns the checks that left the
// list and the checks that came in; a check that changed is in both, one
// whose bytes did not change is in neither. full reports a whole decode
// (the first answer, or one the windowed compare could not place). On an
// error the list keeps its previous answer.
func (l *checkList) apply(body []byte) (gone, came []checkLite, full bool, err error) {
	if l.body != nil {
		if gone, came, ok := l.applyWindow(body); ok {
			return gone, came, false, nil
		}
	}
	open, closing, spans, err := scanArray(body)
	if err != nil {
		return nil, nil, true, err
	}
	checks := make([]checkLite, len(spans))
	for k, sp := range spans {
		if err := json.Unmarshal(body[sp.from:sp.to], &checks[k]); err != nil {
			return nil, nil, true, fmt.Errorf("check %d (byte %d): %w", k, sp.from, err)
		}
	}
	gone = l.checks
	*l = checkList{body: body, open: open, close: closing, spans: spans, checks: checks}
	return gone, checks, true, nil
}

// applyWindow decodes only the elements of body that lie in the stretch
// where body differs from l.body; ok is false when that stretch cannot be
// placed on element boundaries (or does not parse), and l is unchanged.
func (l *checkList) applyWindow(body []byte) (gone, came []checkLite, ok bool) {
	old := l.body
	p := commonPrefix(old, body)
	if p == len(old) && len(old) == len(body) {
		l.body = body
		return nil, nil, true
	}
	cut := len(old) - commonSuffix(old, body, min(len(old), len(body))-p)
	// Elements [0,a) lie wholly in the common prefix, elements [b,n) wholly
	// in the common suffix; prefix and suffix do not overlap, so a <= b.
	n := len(l.spans)
	a := sort.Search(n, func(k int) bool { return l.spans[k].to > p })
	b := sort.Search(n, func(k int) bool { return l.spans[k].from >= cut })
	from := l.open + 1
	if a > 0 {
		from = l.spans[a-1].to
	} else if from > p {
		return nil, nil, false // the bytes before the first element differ
	}
	toOld := l.close
	if b < n {
		toOld = l.spans[b].from
	} else if toOld < cut {
		return nil, nil, false // the bytes after the last element differ
	}
	delta := len(body) - len(old)
	toNew := toOld + delta
	if toNew < from {
		return nil, nil, false
	}
	spans, err := scanElements(body, from, toNew, a > 0, b < n)
	if err != nil {
		return nil, nil, false
	}
	came = make([]checkLite, len(spans))
	for k, sp := range spans {
		if json.Unmarshal(body[sp.from:sp.to], &came[k]) != nil {
			return nil, nil, false
		}
	}
	gone = slices.Clone(l.checks[a:b])
	for k := b; k < n; k++ {
		l.spans[k].from += delta
		l.spans[k].to += delta
	}
	l.spans = slices.Replace(l.spans, a, b, spans...)
	l.checks = slices.Replace(l.checks, a, b, came...)
	l.close += delta
	l.body = body
	return gone, came, true
}

// commonPrefix is the length of the longest common prefix of a and b.
func commonPrefix(a, b []byte) int {
	const block = 4096 // bytes.Equal is vectorised; narrow down bytewise only at the end
	n := min(len(a), len(b))
	i := 0
	for i+block <= n && bytes.Equal(a[i:i+block], b[i:i+block]) {
		i += block
	}
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}

// commonSuffix is the length of the longest common suffix of a and b, at
// most limit.
func commonSuffix(a, b []byte, limit int) int {
	const block = 4096
	i := 0
	for i+block <= limit && bytes.Equal(a[len(a)-i-block:len(a)-i], b[len(b)-i-block:len(b)-i]) {
		i += block
	}
	for i < limit && a[len(a)-1-i] == b[len(b)-1-i] {
		i++
	}
	return i
}

// scanArray finds the brackets of the JSON array body and its elements,
// which must all be objects.
func scanArray(body []byte) (open, closing int, spans []span, err error) {
	open = skipSpace(body, 0, len(body))
	if open == len(body) || body[open] != '[' {
		return 0, 0, nil, errors.New("not a JSON array")
	}
	closing = len(body) - 1
	for closing > open && isSpace(body[closing]) {
		closing--
	}
	if closing == open || body[closing] != ']' {
		return 0, 0, nil, errors.New("unterminated JSON array")
	}
	spans, err = scanElements(body, open+1, closing, false, false)
	return open, closing, spans, err
}

// scanElements finds the objects in body[from:to], a stretch of an array
// between two elements, or between a bracket and an element: left and
// right say whether an element borders it on that side, which decides
// where the commas must be.
func scanElements(body []byte, from, to int, left, right bool) ([]span, error) {
	var spans []span
	wantValue := !left // right after '[' a value comes next; after an element, a comma
	fresh := true      // nothing read yet
	for i := skipSpace(body, from, to); i < to; i = skipSpace(body, i, to) {
		switch body[i] {
		case ',':
			if wantValue {
				return nil, fmt.Errorf("byte %d: unexpected comma", i)
			}
			wantValue = true
			i++
		case '{':
			if !wantValue {
				return nil, fmt.Errorf("byte %d: missing comma between checks", i)
			}
			end, err := skipObject(body, i, to)
			if err != nil {
				return nil, err
			}
			spans = append(spans, span{i, end})
			wantValue = false
			i = end
		default:
			return nil, fmt.Errorf("byte %d: a check is not a JSON object", i)
		}
		fresh = false
	}
	switch {
	case right && !wantValue:
		return nil, fmt.Errorf("byte %d: missing comma between checks", to)
	case !right && wantValue && !(fresh && !left): // "[]" is fine, "[{},]" is not
		return nil, fmt.Errorf("byte %d: trailing comma", to)
	}
	return spans, nil
}

// skipObject returns the offset just past the JSON object that starts at
// body[i], which must end before to. It only matches brackets and skips
// strings; json.Unmarshal of the span validates the rest.
func skipObject(body []byte, i, to int) (int, error) {
	start, depth := i, 0
	for i < to {
		switch body[i] {
		case '"':
			for i++; ; i++ {
				if i >= to {
					return 0, fmt.Errorf("byte %d: unterminated string", start)
				}
				if body[i] == '\\' {
					i++
					continue
				}
				if body[i] == '"' {
					break
				}
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1, nil
			}
		}
		i++
	}
	return 0, fmt.Errorf("byte %d: unterminated object", start)
}

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\t' || c == '\r' }

func skipSpace(body []byte, i, to int) int {
	for i < to && isSpace(body[i]) {
		i++
	}
	return i
}
