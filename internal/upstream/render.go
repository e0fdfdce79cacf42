package upstream

import (
	"strconv"
	"strings"
	"time"
)

// FileHeader opens every rendered file. The parser skips it like any comment.
const FileHeader = "# Managed by swallowkeeper. Do not edit: changes are overwritten.\n"

// Body renders the inside of the upstream block: exactly what the file has
// between the braces, and exactly what a dyups POST sends, so that nginx
// memory and the file never disagree.
func (u Upstream) Body() string {
	var b strings.Builder
	u.writeBody(&b, "")
	return b.String()
}

// RenderFile renders the whole state as nginx configuration, upstreams in
// name order, servers in address order, so equal states give equal bytes.
// Every upstream must have passed Validate; callers build states only from
// validated values.
func RenderFile(s State) []byte {
	var b strings.Builder
	b.WriteString(FileHeader)
	for _, name := range s.Names() {
		s[name].writeBlock(&b)
	}
	return []byte(b.String())
}

// writeBlock writes the upstream's block as the file holds it, with the
// blank line before it.
func (u Upstream) writeBlock(b *strings.Builder) {
	b.WriteString("\nupstream ")
	b.WriteString(u.Name)
	b.WriteString(" {\n")
	u.writeBody(b, "    ")
	b.WriteString("}\n")
}

// FileRenderer renders the same bytes as RenderFile, but keeps each
// upstream's block from the previous call and renders again only the
// upstreams that changed, so that a single-instance change costs the
// rendering of one upstream, not of every server. It also keeps the names
// in file order while the set of names stays the same, so that a change
// sorts no names.
// It is not safe for concurrent use.
type FileRenderer struct {
	blocks map[string]renderedBlock
	names  []string // of the last call, sorted
	size   int      // of the last file, to size the next
}

type renderedBlock struct {
	u    Upstream
	text string
}

// Render renders s as RenderFile does.
func (r *FileRenderer) Render(s State) []byte { return r.RenderTo(nil, s) }

// RenderTo is Render into dst's array when it has the room (dst's bytes
// are overwritten): a caller that keeps the last file to compare with can
// hand back the one before it, rather than make the garbage collector
// take back a file's worth of memory on every change.
func (r *FileRenderer) RenderTo(dst []byte, s State) []byte {
	if !r.sameNames(s) {
		r.names = s.Names()
		if len(r.blocks) > 2*len(s)+64 {
			// A map never gives back its room: start a smaller one when
			// most upstreams left.
			kept := make(map[string]renderedBlock, len(s))
			for name, blk := range r.blocks {
				if _, ok := s[name]; ok {
					kept[name] = blk
				}
			}
			r.blocks = kept
		}
		for name := range r.blocks {
			if _, ok := s[name]; !ok {
				delete(r.blocks, name)
			}
		}
	}
	if r.blocks == nil {
		r.blocks = make(map[string]renderedBlock, len(s))
	}
	out := dst[:0]
	if want := r.size + r.size/8 + len(FileHeader); cap(out) < want {
		out = make([]byte, 0, want)
	}
	out = append(out, FileHeader...)
	for _, name := range r.names {
		u := s[name]
		blk, ok := r.blocks[name]
		if !ok || !blk.u.Equal(u) {
			var b strings.Builder
			u.writeBlock(&b)
			// A copy of exactly the block's length: the builder's buffer
			// grows by doubling, and kept for the life of the block it
			// would hold up to twice the text (megabytes at thousands of
			// servers).
			blk = renderedBlock{u: u, text: strings.Clone(b.String())}
			r.blocks[name] = blk
		}
		out = append(out, blk.text...)
	}
	r.size = len(out)
	return out
}

// sameNames reports whether s has exactly the names of the last call.
func (r *FileRenderer) sameNames(s State) bool {
	if r.names == nil || len(r.names) != len(s) {
		return false
	}
	for _, name := range r.names { // distinct, as many as s has
		if _, ok := s[name]; !ok {
			return false
		}
	}
	return true
}

// writeBody writes the balancing method first: nginx applies ip_hash's and
// hash's refusal of `backup` only to the servers that follow it, and
// `keepalive` last, because it wraps whatever method precedes it (a method
// after it would replace it: "load balancing method redefined").
func (u Upstream) writeBody(b *strings.Builder, indent string) {
	if d := u.Balance.directive(); d != "" {
		b.WriteString(indent)
		b.WriteString(d)
		b.WriteString(";\n")
	}
	for _, s := range u.Servers {
		b.WriteString(indent)
		b.WriteString(s.Directive())
		b.WriteString(";\n")
	}
	if u.Keepalive > 0 {
		b.WriteString(indent)
		b.WriteString("keepalive ")
		b.WriteString(strconv.Itoa(u.Keepalive))
		b.WriteString(";\n")
	}
}

// Directive renders the server statement without its semicolon, e.g.
// "server [::1]:8080 weight=2 max_fails=3 fail_timeout=10s backup".
func (s Server) Directive() string {
	var b strings.Builder
	b.WriteString("server ")
	b.WriteString(s.Addr.String()) // netip brackets IPv6: [::1]:8080
	b.WriteString(" weight=")
	b.WriteString(strconv.Itoa(s.Weight))
	b.WriteString(" max_fails=")
	b.WriteString(strconv.Itoa(s.MaxFails))
	b.WriteString(" fail_timeout=")
	b.WriteString(strconv.FormatInt(int64(s.FailTimeout/time.Second), 10))
	b.WriteString("s")
	if s.MaxConns > 0 {
		b.WriteString(" max_conns=")
		b.WriteString(strconv.Itoa(s.MaxConns))
	}
	if s.Backup {
		b.WriteString(" backup")
	}
	if s.Down {
		b.WriteString(" down")
	}
	return b.String()
}
