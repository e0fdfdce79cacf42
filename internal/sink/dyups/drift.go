package dyups

import (
	"bytes"
	"fmt"
	"hash/maphash"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// detailMemory reads /detail answers for drift checks at the cost of what
// changed. An answer is a list of sections, one per upstream: its name line
// and its server lines. The memory keeps a digest of the sections found to
// show their desired upstream, and read parses only the sections it does
// not know for the same desired upstream. An nginx that did not change
// then costs a split and a map lookup per upstream, and a change the parse
// of its own sections, where parsing the whole answer costs a parse of
// every server line on every read (BenchmarkDriftCheck measures both).
//
// Sections are remembered by their length and a 64-bit hash of their
// text, not the text: at 10,000 upstreams the text was 15 MB of the
// daemon's live heap. The hash is seeded at random per process, so what a
// registry writes cannot be made to collide on purpose; a changed section
// of the same name and length shares its hash by chance at odds of 2^-64
// per compare, and that drift would then go unrepaired (the drift check is
// a safety net behind the pushes) until that upstream changes again.
// Digests keep a check as fast as the text did (BenchmarkDriftCheck); two
// hashes for 128 bits cost a quarter more.
//
// What read returns is what ParseDetail of the whole answer returns, but
// for the upstreams it confirms from memory
// (TestDetailMemoryReadsLikeParseDetail), and what compare finds is what
// parsing the whole answer and matching every upstream would find
// (TestDriftMemoryAgreesWithWholeParse).
//
// A drift check is begin, then compare for each answer read, then end.
type detailMemory struct {
	sections map[sectionDigest]*shownAs // by the digest of the section's text
	seed     maphash.Seed
	check    uint64       // the drift check in progress
	answer   detailAnswer // read's result, kept for its maps' buckets
}

// sectionDigest stands for the text of one /detail section: its length
// and a seeded 64-bit hash of it.
type sectionDigest struct {
	len  int
	hash uint64
}

// digest needs the seed read sets on its first call.
func (m *detailMemory) digest(sec []byte) sectionDigest {
	return sectionDigest{len(sec), maphash.Bytes(m.seed, sec)}
}

// shownAs is the desired upstream a section of /detail was found to show,
// and the last drift check that found it.
type shownAs struct {
	up    upstream.Upstream
	check uint64
}

// detailAnswer is one /detail answer as detailMemory.read returns it: the
// upstreams it shows, each either confirmed from memory to show its
// desired upstream, or parsed.
type detailAnswer struct {
	shown   map[string]bool          // every name in the answer → confirmed from memory
	parsed  Detail                   // the servers of the names not confirmed
	section map[string]sectionDigest // and the digests of their sections, by name
	folded  map[string]string        // shown names by upstream.FoldKey, built when first needed
}

// begin starts a drift check: one or more answers, compared in turn.
func (m *detailMemory) begin() { m.check++ }

// end closes a drift check that compared every answer: sections that none
// of them showed are forgotten.
func (m *detailMemory) end() {
	for d, s := range m.sections {
		if s.check != m.check {
			delete(m.sections, d)
		}
	}
}

// read splits body into sections and parses those the memory does not
// hold for the desired upstream of the same name. The answer it returns is
// valid until the next read. Its errors are those of ParseDetail(body).
func (m *detailMemory) read(body []byte, desired upstream.State) (*detailAnswer, error) {
	if m.sections == nil {
		m.sections, m.answer.shown = map[sectionDigest]*shownAs{}, map[string]bool{}
		m.seed = maphash.MakeSeed()
	}
	a := &m.answer
	clear(a.shown)
	a.parsed, a.section, a.folded = nil, nil, nil
	for rest := body; len(rest) > 0; {
		sec := rest
		if i := bytes.Index(rest, []byte("\n\n")); i >= 0 {
			sec, rest = rest[:i+1], rest[i+2:]
		} else {
			rest = nil
		}
		name, _, _ := bytes.Cut(sec, []byte("\n"))
		// Map lookups keyed by string(bytes) do not copy the bytes. Only a
		// desired upstream's section is hashed: only those are remembered.
		var dg sectionDigest
		u, desiredName := desired[string(name)]
		if desiredName {
			dg = m.digest(sec)
			if s := m.sections[dg]; s != nil && s.up.Equal(u) {
				if _, dup := a.shown[u.Name]; dup {
					return nil, wholeParseError(body, fmt.Errorf("upstream %s listed twice", u.Name))
				}
				a.shown[u.Name], s.check = true, m.check
				continue
			}
		}
		d, err := ParseDetail(string(sec))
		if err != nil {
			return nil, wholeParseError(body, err)
		}
		for n, servers := range d { // at most one
			if _, dup := a.shown[n]; dup {
				return nil, wholeParseError(body, fmt.Errorf("upstream %s listed twice", n))
			}
			a.shown[n] = false
			if a.parsed == nil {
				a.parsed, a.section = Detail{}, map[string]sectionDigest{}
			}
			a.parsed[n] = servers
			if desiredName {
				a.section[n] = dg
			}
		}
	}
	return a, nil
}

// remember records that the section a shows for name was found to show u,
// the desired upstream of that name: the next reads take it as read.
func (m *detailMemory) remember(a *detailAnswer, name string, u upstream.Upstream) {
	if d, ok := a.section[name]; ok {
		m.sections[d] = &shownAs{up: u, check: m.check}
	}
}

// find returns the name under which a shows name, as dyups matches names:
// name itself, or else a name that differs from it only in case.
func (a *detailAnswer) find(name string) (string, bool) {
	if _, ok := a.shown[name]; ok {
		return name, true
	}
	// The names shown, case-folded, are indexed at the first such lookup:
	// a lookup per name, not a scan of the answer per name.
	if a.folded == nil {
		a.folded = make(map[string]string, len(a.shown))
		for n := range a.shown {
			a.folded[upstream.FoldKey(n)] = n
		}
	}
	n, ok := a.folded[upstream.FoldKey(name)]
	return n, ok
}

// compare adds to drift the names of the desired upstreams that one /detail
// answer does not show as desired, and the names of owned upstreams no
// longer desired that it still holds. Names match case-insensitively, as
// dyups matches them: nginx shows the case of the last POST (or of the
// file, after a restart), so a desired upstream shown in another case is
// held, and an owned name that differs from a desired one only in case is
// never a leftover.
func (m *detailMemory) compare(body []byte, desired upstream.State, owned map[string]bool, drift map[string]bool) error {
	a, err := m.read(body, desired)
	if err != nil {
		return err
	}
	for name, u := range desired {
		if a.shown[name] { // confirmed from memory
			continue
		}
		var have []DetailServer
		n, ok := a.find(name)
		if ok {
			have, ok = a.parsed[n]
		}
		if !ok || !serversMatch(have, u) {
			drift[name] = true
			continue
		}
		if n == name {
			m.remember(a, name, u)
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
		if _, held := a.find(name); held && !folded[upstream.FoldKey(name)] {
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
