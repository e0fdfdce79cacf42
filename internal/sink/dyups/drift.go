package dyups

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// detailMemory makes drift checks cost what changed. It remembers the
// sections of /detail answers (an upstream's name line and its server
// lines) that were found to show their desired upstream, and a later
// answer is compared section by section: a section remembered for the same
// desired upstream is not parsed again. At 1,000 upstreams × 10 servers a
// whole answer takes about 12 ms to parse, a check reads three, and any
// change of the desired state made the next check parse them all again;
// now an nginx that did not change costs a split and a map lookup per
// upstream (about 0.3 ms per answer), and a change the parse of its own
// sections (BenchmarkDriftCheck).
//
// What compare finds is what parsing the whole answer and matching every
// upstream would find (drift_test.go checks the two against each other).
type detailMemory struct {
	sections map[string]*shownAs // by section text
	check    uint64              // the drift check in progress
	shown    map[string]bool     // compare's scratch, kept for its buckets
}

// shownAs is the desired upstream a section of /detail was found to show,
// and the last drift check that found it.
type shownAs struct {
	up    upstream.Upstream
	check uint64
}

// begin starts a drift check: one or more answers, compared in turn.
func (m *detailMemory) begin() { m.check++ }

// end closes a drift check that compared every answer: sections that none
// of them showed are forgotten.
func (m *detailMemory) end() {
	for text, s := range m.sections {
		if s.check != m.check {
			delete(m.sections, text)
		}
	}
}

// compare adds to drift the names of the desired upstreams that one /detail
// answer does not show as desired, and the names of owned upstreams no
// longer desired that it still holds (case-insensitively, as dyups
// matches names).
func (m *detailMemory) compare(body []byte, desired upstream.State, owned map[string]bool, drift map[string]bool) error {
	if m.sections == nil {
		m.sections, m.shown = map[string]*shownAs{}, map[string]bool{}
	}
	shown := m.shown // names in the answer → confirmed from memory
	clear(shown)
	var (
		parsed    Detail            // the sections not confirmed from memory
		sectionOf map[string]string // their text, by name
	)
	for rest := body; len(rest) > 0; {
		sec := rest
		if i := bytes.Index(rest, []byte("\n\n")); i >= 0 {
			sec, rest = rest[:i+1], rest[i+2:]
		} else {
			rest = nil
		}
		name, _, _ := bytes.Cut(sec, []byte("\n"))
		// Map lookups keyed by string(bytes) do not copy the bytes.
		if u, ok := desired[string(name)]; ok {
			if s := m.sections[string(sec)]; s != nil && s.up.Equal(u) {
				if _, dup := shown[u.Name]; dup {
					return wholeParseError(body, fmt.Errorf("upstream %s listed twice", u.Name))
				}
				shown[u.Name], s.check = true, m.check
				continue
			}
		}
		d, err := ParseDetail(string(sec))
		if err != nil {
			return wholeParseError(body, err)
		}
		for n, servers := range d { // at most one
			if _, dup := shown[n]; dup {
				return wholeParseError(body, fmt.Errorf("upstream %s listed twice", n))
			}
			shown[n] = false
			if parsed == nil {
				parsed, sectionOf = Detail{}, map[string]string{}
			}
			parsed[n], sectionOf[n] = servers, string(sec)
		}
	}
	for name, u := range desired {
		if shown[name] {
			continue
		}
		if !parsed.Matches(u) {
			drift[name] = true
			continue
		}
		if sec, ok := sectionOf[name]; ok {
			m.sections[sec] = &shownAs{up: u, check: m.check}
		}
	}
	for name := range owned {
		if _, wanted := desired[name]; !wanted && holds(shown, name) {
			drift[name] = true
		}
	}
	return nil
}

// holds reports whether name is among the names shown, case-insensitively.
func holds(shown map[string]bool, name string) bool {
	if _, ok := shown[name]; ok {
		return true
	}
	for n := range shown {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// wholeParseError is the error of parsing the whole answer, which names the
// line at fault; the section's own error only if the whole answer parses
// (it cannot when one of its sections does not).
func wholeParseError(body []byte, sectionErr error) error {
	if _, err := ParseDetail(string(body)); err != nil {
		return err
	}
	return sectionErr
}
