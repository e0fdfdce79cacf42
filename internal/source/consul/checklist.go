package consul

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sort"
)

// checkList is what the source keeps of the last answer of
// /v1/health/state/any: the checks and where each lay in the answer's
// bytes, plus a blockDiff of the answer, not the answer itself.
//
// That watch is how the source learns which services changed without one
// long poll per service, but every wake returns every check of the
// datacenter (some megabytes at 10,000 instances), most of it unchanged.
// Consul encodes the list in a stable order with a deterministic encoder,
// so one changed check changes one small stretch of bytes. apply asks the
// blockDiff for the stretch that may differ from the last answer and
// decodes only the checks in it: the bytes outside it are equal, so the
// checks there are equal too. A change then costs hashing the answer and
// decoding a few checks, not decoding every check (BenchmarkCheckList
// measures both). Anything apply cannot place on check boundaries falls
// back to decoding the whole answer, which is also how the first answer
// is read.
type checkList struct {
	blocks blockDiff   // the last answer, as hashes of its blocks
	open   int         // offset of the array's '['
	close  int         // offset of the array's ']'
	spans  []span      // where each element of checks lay
	checks []checkLite // the last answer's checks, in its order
}

type span struct{ from, to int }

// blockDiff tells where an answer may differ from the one kept before it,
// keeping of that one only its length and hashes of its whole blocks, not
// its bytes. Keeping hashes rather than the answer lets the answer's
// buffer be read into again at once: it saves holding a copy of the
// answer (megabytes at 10,000 checks) for the life of the daemon, and
// costs hashing each answer, a little more CPU than comparing its bytes.
//
// Blocks are counted from both ends, so that a change shifts neither the
// blocks before it nor those after it. A hash collision could hide one
// change until that block changes again or the periodic re-read of every
// service (consul.resync) runs: hashes are 64-bit and seeded per process,
// so about 2^-64 per changed block, and not something registry data can
// aim at.
//
// The zero value keeps no answer. TestBlockDiffMatchesByteCompare checks
// it against comparing the bytes.
type blockDiff struct {
	have       bool     // an answer is kept
	size       int      // its length
	head, tail []uint64 // hashes of its whole blocks from the front, and from the back
	// The length and hashes of the answer diff saw last, which keep makes
	// the kept one; their arrays are reused.
	nextSize           int
	nextHead, nextTail []uint64
}

// changedRange is where an answer may differ from the previous one: their
// first from bytes are equal, and so are their bytes from oldTo (in the
// previous answer) and newTo (in the new one) to the end. The two
// stretches do not overlap: from <= oldTo, from <= newTo.
type changedRange struct {
	from, oldTo, newTo int
}

// equal reports whether nothing may differ: the answers are the same.
func (r changedRange) equal() bool { return r.oldTo == r.from && r.newTo == r.from }

// blockSize is the unit in which the answer's start and end are found
// unchanged: the checks in the one or two blocks around a change are
// decoded too, and dropped if equal (a check is about 300 bytes).
const blockSize = 1024

var blockSeed = maphash.MakeSeed()

// diff hashes body and returns where it may differ from the kept answer;
// ok is false when no answer is kept. It keeps no reference to body, and
// does not change what is kept: keep does.
func (d *blockDiff) diff(body []byte) (r changedRange, ok bool) {
	d.nextSize = len(body)
	d.nextHead, d.nextTail = blockHashes(body, d.nextHead, d.nextTail)
	if !d.have {
		return changedRange{}, false
	}
	p := commonBlocks(d.head, d.nextHead) * blockSize
	// A common suffix, not overlapping the prefix.
	s := min(commonBlocks(d.tail, d.nextTail)*blockSize, min(d.size, len(body))-p)
	return changedRange{from: p, oldTo: d.size - s, newTo: len(body) - s}, true
}

// keep makes the answer diff saw last the one the next diff compares with.
func (d *blockDiff) keep() {
	d.have, d.size = true, d.nextSize
	d.head, d.nextHead = d.nextHead, d.head
	d.tail, d.nextTail = d.nextTail, d.tail
}

// blockHashes hashes body's whole blocks from the front and from the back
// into head and tail, reusing their arrays. tail[0] is the last block.
func blockHashes(body []byte, head, tail []uint64) ([]uint64, []uint64) {
	n := len(body) / blockSize
	head, tail = slices.Grow(head[:0], n)[:n], slices.Grow(tail[:0], n)[:n]
	for k := range n {
		head[k] = maphash.Bytes(blockSeed, body[k*blockSize:(k+1)*blockSize])
	}
	// The back's blocks in the order they lie in memory, which reads faster.
	r := len(body) % blockSize
	for k := range n {
		tail[n-1-k] = maphash.Bytes(blockSeed, body[r+k*blockSize:r+(k+1)*blockSize])
	}
	return head, tail
}

// commonBlocks is the number of equal hashes a and b start with.
func commonBlocks(a, b []uint64) int {
	k := 0
	for k < len(a) && k < len(b) && a[k] == b[k] {
		k++
	}
	return k
}

// apply makes body the list's answer; the list keeps no reference to body.
// It returns the checks that left the list and the checks that came in; a
// check that changed is in both, one that did not is in neither. full
// reports a whole decode (the first answer, or one whose changed range
// could not be placed). On an error the list keeps its previous answer,
// and compares the next one with it.
func (l *checkList) apply(body []byte) (gone, came []checkLite, full bool, err error) {
	if r, ok := l.blocks.diff(body); ok {
		if gone, came, ok := l.applyRange(body, r); ok {
			l.blocks.keep()
			return gone, came, false, nil
		}
	}
	open, closing, spans, checks, err := decodeWhole(body)
	if err != nil {
		return nil, nil, true, err
	}
	gone = l.checks
	l.open, l.close, l.spans, l.checks = open, closing, spans, checks
	l.blocks.keep()
	return gone, checks, true, nil
}

// decodeWhole decodes every check of body.
func decodeWhole(body []byte) (open, closing int, spans []span, checks []checkLite, err error) {
	open, closing, spans, err = scanArray(body)
	if err != nil {
		return 0, 0, nil, nil, err
	}
	checks = make([]checkLite, len(spans))
	for k, sp := range spans {
		if err := json.Unmarshal(body[sp.from:sp.to], &checks[k]); err != nil {
			return 0, 0, nil, nil, fmt.Errorf("check %d (byte %d): %w", k, sp.from, err)
		}
	}
	return open, closing, spans, checks, nil
}

// applyRange decodes only the elements of body that lie in r, the
// stretch where body may differ from the last answer; ok is false when
// that stretch cannot be placed on element boundaries (or does not parse),
// and l is unchanged.
func (l *checkList) applyRange(body []byte, r changedRange) (gone, came []checkLite, ok bool) {
	if r.equal() {
		return nil, nil, true
	}
	// Elements [0,a) lie wholly in the common prefix, elements [b,n) wholly
	// in the common suffix; prefix and suffix do not overlap, so a <= b.
	n := len(l.spans)
	a := sort.Search(n, func(k int) bool { return l.spans[k].to > r.from })
	b := sort.Search(n, func(k int) bool { return l.spans[k].from >= r.oldTo })
	delta := r.newTo - r.oldTo
	from := l.open + 1
	if a > 0 {
		from = l.spans[a-1].to
	} else if !bracketAt(body, l.open, '[') {
		return nil, nil, false // the bytes before the first element differ
	}
	toOld := l.close
	if b < n {
		toOld = l.spans[b].from
	} else if !bracketAt(body, l.close+delta, ']') {
		return nil, nil, false // the bytes after the last element differ
	}
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
	gone, came = unequal(gone, came)
	return gone, came, true
}

// bracketAt reports whether body holds c at i with only spaces around it
// on the outer side: before a '[', after a ']'.
func bracketAt(body []byte, i int, c byte) bool {
	if i < 0 || i >= len(body) || body[i] != c {
		return false
	}
	if c == '[' {
		return skipSpace(body, 0, i) == i
	}
	return skipSpace(body, i+1, len(body)) == len(body)
}

// unequal drops the checks that are in both lists alike: the neighbours of
// a change that fell in its blocks. It keeps the order of each list.
func unequal(gone, came []checkLite) ([]checkLite, []checkLite) {
	both := make(map[checkLite]int, len(gone))
	for _, c := range gone {
		both[c]++
	}
	var newCame []checkLite
	for _, c := range came {
		if both[c] > 0 {
			both[c]--
			continue
		}
		newCame = append(newCame, c)
	}
	var newGone []checkLite
	for _, c := range gone {
		if both[c] > 0 { // not matched by a check that came
			both[c]--
			newGone = append(newGone, c)
		}
	}
	return newGone, newCame
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
