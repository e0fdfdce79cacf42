package packaging

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The RPM file format (rpm's doc/manual/format.md): a 96-byte lead, then
// the signature header, padded to 8 bytes, then the main header, then the
// compressed cpio payload. A header is a magic, an index of entries (tag,
// type, offset, count) and a data store.
var (
	rpmLeadMagic   = []byte{0xed, 0xab, 0xee, 0xdb}
	rpmHeaderMagic = []byte{0x8e, 0xad, 0xe8, 0x01}
)

const (
	rpmTagName       = 1000
	rpmTagVersion    = 1001
	rpmTagPrein      = 1023
	rpmTagFileModes  = 1030
	rpmTagFileFlags  = 1037
	rpmTagDirIndexes = 1116
	rpmTagBaseNames  = 1117
	rpmTagDirNames   = 1118

	rpmTypeInt16       = 3
	rpmTypeInt32       = 4
	rpmTypeString      = 6
	rpmTypeStringArray = 8
	rpmTypeI18NString  = 9

	rpmFileConfig    = 1 << 0
	rpmFileNoReplace = 1 << 4
)

// rpmHeader is a parsed header: strings and integers by tag.
type rpmHeader struct {
	strs map[uint32][]string
	ints map[uint32][]uint32
}

// parseRPMHeader reads the header at b[off:] and returns it and the offset
// just after it.
func parseRPMHeader(b []byte, off int) (rpmHeader, int, error) {
	h := rpmHeader{strs: map[uint32][]string{}, ints: map[uint32][]uint32{}}
	if len(b) < off+16 || !bytes.Equal(b[off:off+4], rpmHeaderMagic) {
		return h, 0, fmt.Errorf("no header magic at offset %d", off)
	}
	n := int(binary.BigEndian.Uint32(b[off+8:]))
	size := int(binary.BigEndian.Uint32(b[off+12:]))
	index := off + 16
	store := index + 16*n
	end := store + size
	if n > 1<<16 || size > 1<<28 || end > len(b) {
		return h, 0, fmt.Errorf("header at %d: %d entries, %d bytes: beyond the file's %d bytes", off, n, size, len(b))
	}
	data := b[store:end]
	for i := range n {
		e := b[index+16*i:]
		tag, typ := binary.BigEndian.Uint32(e), binary.BigEndian.Uint32(e[4:])
		at, count := int(binary.BigEndian.Uint32(e[8:])), int(binary.BigEndian.Uint32(e[12:]))
		if at > len(data) {
			return h, 0, fmt.Errorf("tag %d: offset %d beyond the store", tag, at)
		}
		switch typ {
		case rpmTypeString, rpmTypeStringArray, rpmTypeI18NString:
			rest := data[at:]
			for range count {
				s, tail, ok := bytes.Cut(rest, []byte{0})
				if !ok {
					return h, 0, fmt.Errorf("tag %d: unterminated string", tag)
				}
				h.strs[tag] = append(h.strs[tag], string(s))
				rest = tail
			}
		case rpmTypeInt32:
			if at+4*count > len(data) {
				return h, 0, fmt.Errorf("tag %d: %d int32 beyond the store", tag, count)
			}
			for j := range count {
				h.ints[tag] = append(h.ints[tag], binary.BigEndian.Uint32(data[at+4*j:]))
			}
		case rpmTypeInt16:
			if at+2*count > len(data) {
				return h, 0, fmt.Errorf("tag %d: %d int16 beyond the store", tag, count)
			}
			for j := range count {
				h.ints[tag] = append(h.ints[tag], uint32(binary.BigEndian.Uint16(data[at+2*j:])))
			}
		}
	}
	return h, end, nil
}

// rpmFile is one file the package installs.
type rpmFile struct {
	mode  uint32
	flags uint32
}

// readRPM checks the lead and both header magics and returns the main
// header and the package's files by path.
func readRPM(b []byte) (rpmHeader, map[string]rpmFile, error) {
	if len(b) < 96 || !bytes.Equal(b[:4], rpmLeadMagic) {
		return rpmHeader{}, nil, fmt.Errorf("no RPM lead magic")
	}
	if b[4] != 3 {
		return rpmHeader{}, nil, fmt.Errorf("RPM lead version %d.%d, want 3", b[4], b[5])
	}
	_, end, err := parseRPMHeader(b, 96)
	if err != nil {
		return rpmHeader{}, nil, fmt.Errorf("signature header: %w", err)
	}
	end = (end + 7) &^ 7
	h, _, err := parseRPMHeader(b, end)
	if err != nil {
		return h, nil, fmt.Errorf("main header: %w", err)
	}
	base, dirs := h.strs[rpmTagBaseNames], h.strs[rpmTagDirNames]
	idx, modes, flags := h.ints[rpmTagDirIndexes], h.ints[rpmTagFileModes], h.ints[rpmTagFileFlags]
	if len(idx) != len(base) || len(modes) != len(base) || len(flags) != len(base) {
		return h, nil, fmt.Errorf("file tags disagree: %d names, %d dir indexes, %d modes, %d flags", len(base), len(idx), len(modes), len(flags))
	}
	files := map[string]rpmFile{}
	for i, name := range base {
		if int(idx[i]) >= len(dirs) {
			return h, nil, fmt.Errorf("file %s: dir index %d of %d", name, idx[i], len(dirs))
		}
		files[dirs[idx[i]]+name] = rpmFile{mode: modes[i], flags: flags[i]}
	}
	return h, files, nil
}

// checkRPM reads the .rpm's header itself (the Go test needs no rpm tool)
// and checks it against the .deb's regular files; where rpm is installed,
// it also asks rpm for the file list.
func checkRPM(t *testing.T, path string, debFiles map[string]bool, confPath, user string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h, files, err := readRPM(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if got := h.strs[rpmTagName]; !slices.Equal(got, []string{"swallowkeeper"}) {
		t.Errorf("rpm name %v, want swallowkeeper", got)
	}
	if got := h.strs[rpmTagVersion]; !slices.Equal(got, []string{testPkgVersion}) {
		t.Errorf("rpm version %v, want %s", got, testPkgVersion)
	}
	var regular []string
	for p, f := range files {
		if f.mode&0o170000 == 0o100000 {
			regular = append(regular, p)
		}
	}
	var want []string
	for p := range debFiles {
		want = append(want, p)
	}
	slices.Sort(regular)
	slices.Sort(want)
	if !slices.Equal(regular, want) {
		t.Errorf("rpm regular files differ from the .deb's:\nrpm: %v\ndeb: %v", regular, want)
	}
	if f := files["/usr/bin/swallowkeeper"]; f.mode&0o111 == 0 {
		t.Errorf("rpm: /usr/bin/swallowkeeper mode %o, not executable", f.mode)
	}
	if f := files[confPath]; f.flags&(rpmFileConfig|rpmFileNoReplace) != rpmFileConfig|rpmFileNoReplace {
		t.Errorf("rpm: %s flags %#x, want %%config(noreplace)", confPath, f.flags)
	}
	if pre := strings.Join(h.strs[rpmTagPrein], ""); !strings.Contains(pre, "useradd --system") || !strings.Contains(pre, user) {
		t.Errorf("rpm %%pre does not create user %s:\n%s", user, pre)
	}
	t.Logf("rpm: lead and header magics, name, version and %d files read from the header", len(files))

	rpmBin, err := exec.LookPath("rpm")
	if err != nil {
		t.Logf("rpm is not installed: the header read above is the whole check")
		return
	}
	listed := strings.Fields(run(t, rpmBin, "-qlp", path))
	var all []string
	for p := range files {
		all = append(all, p)
	}
	slices.Sort(all)
	slices.Sort(listed)
	if !slices.Equal(listed, all) {
		t.Errorf("rpm -qlp lists %v; the header read here gives %v", listed, all)
	} else {
		t.Logf("%s -qlp lists the same %d paths", rpmBin, len(listed))
	}
}

// TestReadRPMRefusesWhatIsNotAnRPM keeps the header reader honest: a .deb,
// a truncated file and a damaged header magic are refused.
func TestReadRPMRefusesWhatIsNotAnRPM(t *testing.T) {
	lead := make([]byte, 96)
	copy(lead, rpmLeadMagic)
	lead[4] = 3
	badMagic := append(slices.Clone(lead), 0x8e, 0xad, 0xe8, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	tooBig := append(slices.Clone(lead), 0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0)
	for name, b := range map[string][]byte{
		"deb":         []byte("!<arch>\ndebian-binary   "),
		"lead only":   lead,
		"bad magic":   badMagic,
		"beyond file": tooBig,
	} {
		if _, _, err := readRPM(b); err == nil {
			t.Errorf("%s: read as an RPM", name)
		}
	}
}
