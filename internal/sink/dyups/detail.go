package dyups

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// DetailServer is one server line of GET /detail:
//
//	server 127.0.0.1:28091 weight=1 max_conns=0 max_fails=1 fail_timeout=10 backup=0 down=0
//
// Addr is kept as text: dyups prints the resolved ip:port, [v6]:port or
// unix:/path.
type DetailServer struct {
	Addr                                    string
	Weight, MaxConns, MaxFails, FailTimeout int // FailTimeout in whole seconds
	Backup, Down                            bool
}

// Detail is what GET /detail says an nginx worker holds, by upstream name
// as dyups stores it (the case of the last POST).
type Detail map[string][]DetailServer

// ParseDetail reads the body of GET /detail: per upstream a name line, its
// server lines, then an empty line. An empty body (204) is no upstreams.
func ParseDetail(body string) (Detail, error) {
	d := Detail{}
	name := ""
	for i, line := range strings.Split(body, "\n") {
		switch {
		case line == "":
			name = ""
		case strings.HasPrefix(line, "server "):
			if name == "" {
				return nil, fmt.Errorf("detail line %d: server line outside an upstream", i+1)
			}
			s, err := parseDetailServer(line)
			if err != nil {
				return nil, fmt.Errorf("detail line %d: %w", i+1, err)
			}
			d[name] = append(d[name], s)
		default:
			if name != "" {
				return nil, fmt.Errorf("detail line %d: %q is neither a server line nor the blank line ending upstream %s", i+1, line, name)
			}
			if strings.ContainsAny(line, " \t") {
				return nil, fmt.Errorf("detail line %d: bad upstream name %q", i+1, line)
			}
			name = line
			if _, dup := d[name]; dup {
				return nil, fmt.Errorf("detail line %d: upstream %s listed twice", i+1, name)
			}
			d[name] = []DetailServer{}
		}
	}
	return d, nil
}

func parseDetailServer(line string) (DetailServer, error) {
	f := strings.Fields(line)
	if len(f) != 8 {
		return DetailServer{}, fmt.Errorf("server line %q: want 8 fields, got %d", line, len(f))
	}
	s := DetailServer{Addr: f[1]}
	want := []string{"weight", "max_conns", "max_fails", "fail_timeout", "backup", "down"}
	vals := make([]int, len(want))
	for i, key := range want {
		k, v, ok := strings.Cut(f[i+2], "=")
		if !ok || k != key {
			return DetailServer{}, fmt.Errorf("server line %q: want %s= at field %d", line, key, i+3)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return DetailServer{}, fmt.Errorf("server line %q: %s=%q is not a count", line, key, v)
		}
		vals[i] = n
	}
	s.Weight, s.MaxConns, s.MaxFails, s.FailTimeout = vals[0], vals[1], vals[2], vals[3]
	s.Backup, s.Down = vals[4] == 1, vals[5] == 1
	return s, nil
}

// detailOf is how /detail shows a server we render.
func detailOf(s upstream.Server) DetailServer {
	return DetailServer{
		Addr:        s.Addr.String(),
		Weight:      s.Weight,
		MaxConns:    s.MaxConns,
		MaxFails:    s.MaxFails,
		FailTimeout: int(s.FailTimeout / time.Second),
		Backup:      s.Backup,
		Down:        s.Down,
	}
}

// Lookup finds an upstream case-insensitively, as dyups matches names.
func (d Detail) Lookup(name string) ([]DetailServer, bool) {
	if s, ok := d[name]; ok {
		return s, true
	}
	key := upstream.FoldKey(name) // as the drift check folds names
	for n, s := range d {
		if upstream.FoldKey(n) == key {
			return s, true
		}
	}
	return nil, false
}

// Matches reports whether the worker holds u's servers with u's
// parameters, in any order. (keepalive and balancing directives do not show
// in /detail and cannot be compared.)
func (d Detail) Matches(u upstream.Upstream) bool {
	have, ok := d.Lookup(u.Name)
	return ok && serversMatch(have, u)
}

// serversMatch reports whether have, a worker's servers of an upstream,
// are u's servers with u's parameters, in any order.
func serversMatch(have []DetailServer, u upstream.Upstream) bool {
	if len(have) != len(u.Servers) {
		return false
	}
	want := make(map[DetailServer]int, len(u.Servers))
	for _, s := range u.Servers {
		want[detailOf(s)]++
	}
	for _, s := range have {
		if want[s] == 0 {
			return false
		}
		want[s]--
	}
	return true
}
