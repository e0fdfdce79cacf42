package dyups

import (
	"bytes"
	"fmt"

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
// longer desired that it still holds. Names match case-insensitively, as
// dyups matches them: nginx shows the case of the last POST (or of the
// file, after a restart), so a desired upstream shown in another case is
// held, and an owned name that differs from a desired one only in case is
// never a leftover.
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
	// A desired name not shown as is may be shown in another case. The
	// names shown, case-folded, are indexed at the first such name: a
	// lookup per name, not a scan of the answer per name.
	var shownFold map[string]string
	asShown := func(name string) (string, bool) {
		if _, ok := shown[name]; ok {
			return name, true
		}
		if shownFold == nil {
			shownFold = make(map[string]string, len(shown))
			for n := range shown {
				shownFold[upstream.FoldKey(n)] = n
			}
		}
		n, ok := shownFold[upstream.FoldKey(name)]
		return n, ok
	}
	for name, u := range desired {
		if shown[name] {
			continue
		}
		var have []DetailServer
		n, ok := asShown(name)
		if ok {
			have, ok = parsed[n]
		}
		if !ok || !serversMatch(have, u) {
			drift[name] = true
			continue
		}
		if sec, ok := sectionOf[n]; ok && n == name {
			m.sections[sec] = &shownAs{up: u, check: m.check}
		}
	}
	var folded map[string]bool // desired names case-folded, built when needed
	for name := range owned {
		if _, wanted := desired[name]; wanted {
			continue
		}
		if folded == nil {
			folded = make(map[string]bool, len(desired))
			for n := range desired {
				folded[upstream.FoldKey(n)] = true
			}
		}
		// An owned name that folds to a desired one (a case-only rename
		// whose sync has not run yet) is the desired upstream in nginx,
		// not a leftover: deleting it would delete that one.
		if _, held := asShown(name); held && !folded[upstream.FoldKey(name)] {
			drift[name] = true
		}
	}
	return nil
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
