package upstream

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// ParseFile reads back a file written by RenderFile (or edited by hand in
// the same dialect): `upstream NAME { [least_conn|ip_hash|hash KEY
// [consistent];] server ...; keepalive N; }` blocks,
// with comments and free whitespace. Anything else is an error that names
// the line: a corrupt file must never turn into an empty state.
func ParseFile(data []byte) (State, error) {
	p := &parser{toks: tokenize(string(data))}
	state := State{}
	folded := map[string]string{}
	for !p.done() {
		t := p.next()
		if t.text != "upstream" {
			return nil, fmt.Errorf("line %d: want \"upstream\", got %q", t.line, t.text)
		}
		name := p.next()
		if err := ValidName(name.text); err != nil || name.special() {
			return nil, fmt.Errorf("line %d: bad upstream name %q", name.line, name.text)
		}
		if open := p.next(); open.text != "{" {
			return nil, fmt.Errorf("line %d: want \"{\" after upstream %s, got %q", open.line, name.text, open.text)
		}
		u, err := p.body(name.text, true)
		if err != nil {
			return nil, err
		}
		if other, dup := folded[FoldKey(u.Name)]; dup {
			return nil, fmt.Errorf("line %d: upstream %s defined twice (as %s before; names are case-insensitive)", name.line, u.Name, other)
		}
		folded[FoldKey(u.Name)] = u.Name
		state[u.Name] = u
	}
	return state, nil
}

// ParseBody reads the inside of one upstream block, as sent in a dyups POST.
func ParseBody(name, body string) (Upstream, error) {
	p := &parser{toks: tokenize(body)}
	return p.body(name, false)
}

type token struct {
	text string
	line int
}

// special reports whether the token is punctuation rather than a word.
func (t token) special() bool { return t.text == "{" || t.text == "}" || t.text == ";" }

type parser struct {
	toks []token
	pos  int
}

func (p *parser) done() bool { return p.pos >= len(p.toks) }

func (p *parser) next() token {
	if p.done() {
		line := 1
		if n := len(p.toks); n > 0 {
			line = p.toks[n-1].line
		}
		return token{text: "", line: line}
	}
	t := p.toks[p.pos]
	p.pos++
	return t
}

// body parses statements up to the closing brace (closed) or the end of
// input (!closed).
func (p *parser) body(name string, closed bool) (Upstream, error) {
	u := Upstream{Name: name}
	for {
		if p.done() {
			if closed {
				return u, fmt.Errorf("upstream %s: missing \"}\" at end of input", name)
			}
			break
		}
		t := p.next()
		if t.text == "}" && closed {
			break
		}
		if t.special() {
			return u, fmt.Errorf("line %d: upstream %s: unexpected %q", t.line, name, t.text)
		}
		args, end := p.statement()
		if end.text != ";" {
			return u, fmt.Errorf("line %d: upstream %s: %s statement not terminated by \";\"", t.line, name, t.text)
		}
		switch t.text {
		case "server":
			s, err := parseServer(args)
			if err != nil {
				return u, fmt.Errorf("line %d: upstream %s: %w", t.line, name, err)
			}
			u.Servers = append(u.Servers, s)
		case "keepalive":
			if len(args) != 1 {
				return u, fmt.Errorf("line %d: upstream %s: keepalive takes one number", t.line, name)
			}
			n, err := ParseCount("keepalive", args[0], 1, MaxKeepalive)
			if err != nil {
				return u, fmt.Errorf("line %d: upstream %s: %w", t.line, name, err)
			}
			u.Keepalive = n
		case LeastConn, IPHash, Hash:
			if u.Balance != (Balance{}) || len(u.Servers) > 0 || u.Keepalive > 0 {
				return u, fmt.Errorf("line %d: upstream %s: %s must be the first statement, and only one balancing method is allowed", t.line, name, t.text)
			}
			b, err := balanceFromWords(append([]string{t.text}, args...))
			if err != nil {
				return u, fmt.Errorf("line %d: upstream %s: %w", t.line, name, err)
			}
			u.Balance = b
		default:
			return u, fmt.Errorf("line %d: upstream %s: unknown directive %q", t.line, name, t.text)
		}
	}
	u.Sort()
	if err := u.Validate(); err != nil {
		return u, err
	}
	return u, nil
}

// statement collects words up to and including the next punctuation token.
func (p *parser) statement() ([]string, token) {
	var args []string
	for !p.done() {
		t := p.next()
		if t.special() {
			return args, t
		}
		args = append(args, t.text)
	}
	return args, token{}
}

func parseServer(args []string) (Server, error) {
	if len(args) == 0 {
		return Server{}, fmt.Errorf("server without address")
	}
	ap, err := netip.ParseAddrPort(args[0])
	if err != nil {
		return Server{}, fmt.Errorf("server address %q: want IP:port or [IPv6]:port", args[0])
	}
	// Defaults are nginx's own, so a hand-written "server 10.0.0.1:80;" reads
	// back as nginx would use it.
	s := Server{Addr: ap, Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second}
	for _, a := range args[1:] {
		key, val, hasVal := strings.Cut(a, "=")
		switch {
		case a == "backup":
			s.Backup = true
		case a == "down":
			s.Down = true
		case hasVal && key == "weight":
			s.Weight, err = ParseCount("weight", val, 1, MaxWeight)
		case hasVal && key == "max_fails":
			s.MaxFails, err = ParseCount("max_fails", val, 0, MaxMaxFails)
		case hasVal && key == "max_conns":
			s.MaxConns, err = ParseCount("max_conns", val, 0, MaxMaxConns)
		case hasVal && key == "fail_timeout":
			s.FailTimeout, err = parseSeconds(val)
		default:
			return s, fmt.Errorf("server %s: unknown parameter %q", args[0], a)
		}
		if err != nil {
			return s, fmt.Errorf("server %s: %w", args[0], err)
		}
	}
	return s, s.Validate()
}

// parseSeconds reads an nginx time in whole seconds: "10", "10s", "2m", "1h".
func parseSeconds(v string) (time.Duration, error) {
	unit := time.Second
	num := v
	switch {
	case strings.HasSuffix(v, "s"):
		num = v[:len(v)-1]
	case strings.HasSuffix(v, "m"):
		num, unit = v[:len(v)-1], time.Minute
	case strings.HasSuffix(v, "h"):
		num, unit = v[:len(v)-1], time.Hour
	}
	n, err := strconv.ParseUint(num, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("fail_timeout %q: want whole seconds like 10s", v)
	}
	d := time.Duration(n) * unit
	if d > MaxFailTimeout {
		return 0, fmt.Errorf("fail_timeout %q longer than %v", v, MaxFailTimeout)
	}
	return d, nil
}

// tokenize splits nginx configuration into words and the punctuation { } ;,
// dropping comments. Quotes are not part of our dialect: a quote character
// ends up inside a word, which then fails validation.
func tokenize(s string) []token {
	var toks []token
	line := 1
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\n':
			line++
			i++
		case c == ' ' || c == '\t' || c == '\r':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '{' || c == '}' || c == ';':
			toks = append(toks, token{text: string(c), line: line})
			i++
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\r\n#{};", rune(s[j])) {
				j++
			}
			toks = append(toks, token{text: s[i:j], line: line})
			i = j
		}
	}
	return toks
}
