package upstream

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Balancing methods. RoundRobin is nginx's default and renders no line.
const (
	RoundRobin = "round_robin"
	LeastConn  = "least_conn"
	IPHash     = "ip_hash"
	Hash       = "hash"
)

// MaxHashKeyLen bounds a hash key: it is an nginx variable expression, and
// no real key comes near it.
const MaxHashKeyLen = 200

// Balance is an upstream's balancing method. The zero value is round robin.
// It is comparable, so Equal compares it with ==.
type Balance struct {
	Method     string // "" (round robin), LeastConn, IPHash or Hash
	Key        string // Hash only: an nginx variable expression, see ValidHashKey
	Consistent bool   // Hash only: ketama consistent hashing
}

// ParseBalance reads the configuration's spelling of a method:
// "round_robin" (or ""), "least_conn", "ip_hash", "hash KEY" or
// "hash KEY consistent", words separated by blanks.
func ParseBalance(s string) (Balance, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return Balance{}, nil
	}
	b, err := balanceFromWords(f)
	if err != nil {
		return Balance{}, fmt.Errorf("balance %q: %w", s, err)
	}
	return b, nil
}

// balanceFromWords reads a method from its words as they appear in an
// upstream block (the directive name first) or in the configuration.
func balanceFromWords(f []string) (Balance, error) {
	switch f[0] {
	case RoundRobin, LeastConn, IPHash:
		if len(f) != 1 {
			return Balance{}, fmt.Errorf("%s takes no argument", f[0])
		}
		if f[0] == RoundRobin {
			return Balance{}, nil
		}
		return Balance{Method: f[0]}, nil
	case Hash:
		if len(f) < 2 || len(f) > 3 {
			return Balance{}, errors.New("want hash KEY [consistent]")
		}
		if len(f) == 3 && f[2] != "consistent" {
			return Balance{}, fmt.Errorf("unknown hash parameter %q (want consistent)", f[2])
		}
		b := Balance{Method: Hash, Key: f[1], Consistent: len(f) == 3}
		return b, b.Validate()
	}
	return Balance{}, fmt.Errorf("unknown method %q (want round_robin, least_conn, ip_hash or hash KEY [consistent])", f[0])
}

// Validate checks the method and, for hash, its key.
func (b Balance) Validate() error {
	switch b.Method {
	case "", LeastConn, IPHash:
		if b.Key != "" || b.Consistent {
			return fmt.Errorf("%s takes no key", b)
		}
		return nil
	case Hash:
		return ValidHashKey(b.Key)
	}
	return fmt.Errorf("unknown balancing method %q", b.Method)
}

// HashKeyVariables are the variables a hash key may name, besides those
// under HashKeyPrefixes: nginx's own (ngx_http_variables.c), known to every
// build whatever its modules, that describe the request or its client.
// A variable nginx does not know fails the persisted file's nginx -t
// ("unknown variable"); one a `map` or `set` of nginx.conf defines is
// known only there, so it is refused too.
var HashKeyVariables = []string{
	"remote_addr", "binary_remote_addr", "remote_port", "remote_user",
	"host", "server_name", "server_addr", "server_port", "server_protocol",
	"scheme", "https", "request_method", "request", "request_uri", "uri",
	"document_uri", "args", "query_string", "is_args", "content_type",
	"content_length", "proxy_protocol_addr", "proxy_protocol_port",
}

// HashKeyPrefixes name a request header, cookie or argument: $http_NAME,
// $cookie_NAME, $arg_NAME, known to nginx for any NAME.
var HashKeyPrefixes = []string{"http_", "cookie_", "arg_"}

// knownVariable reports whether nginx knows $name (case-insensitively,
// as nginx looks variables up).
func knownVariable(name string) bool {
	name = strings.ToLower(name)
	for _, p := range HashKeyPrefixes {
		if rest, ok := strings.CutPrefix(name, p); ok {
			return rest != ""
		}
	}
	return slices.Contains(HashKeyVariables, name)
}

// ValidHashKey checks a hash key. It goes into the rendered file and the
// dyups body as one nginx word, so it is held to a narrow alphabet that can
// carry no nginx syntax (no blank, quote, brace, semicolon, hash sign or
// backslash): "$name" variables (name [A-Za-z_][A-Za-z0-9_]*; the ${name}
// form is not accepted) and literal runs of [A-Za-z0-9_.:/-]. At least one
// variable is required: a constant key sends everything to one server.
// Every variable is one nginx knows in any configuration (knownVariable).
func ValidHashKey(key string) error {
	if key == "" {
		return errors.New("hash needs a key, e.g. $remote_addr")
	}
	if len(key) > MaxHashKeyLen {
		return fmt.Errorf("hash key longer than %d bytes", MaxHashKeyLen)
	}
	var vars []string
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c == '$' {
			j := i + 1
			for j < len(key) && isNameByte(key[j], j == i+1) {
				j++
			}
			if j == i+1 {
				return fmt.Errorf("hash key %q: \"$\" at byte %d does not start a variable name ([A-Za-z_][A-Za-z0-9_]*)", key, i)
			}
			vars = append(vars, key[i+1:j])
			i = j - 1
			continue
		}
		if !isNameByte(c, false) && c != '.' && c != ':' && c != '/' && c != '-' {
			return fmt.Errorf("hash key %q: character %q at byte %d is not allowed (want $variables and [A-Za-z0-9_.:/-])", key, c, i)
		}
	}
	if len(vars) == 0 {
		return fmt.Errorf("hash key %q has no $variable: every request would go to one server", key)
	}
	for _, v := range vars {
		if !knownVariable(v) {
			return fmt.Errorf("hash key %q: $%s is not a variable nginx knows in every configuration (want $http_NAME, $cookie_NAME, $arg_NAME or one of $%s)", key, v, strings.Join(HashKeyVariables, ", $"))
		}
	}
	return nil
}

// CheckBalance checks what nginx -t checks of u's method: the method and
// its key, and no backup server under ip_hash or hash. Plan runs it as its
// last line of defence, on every upstream of every plan, so it leaves the
// servers' own checks to Validate.
func (u Upstream) CheckBalance() error {
	if err := u.Balance.Validate(); err != nil {
		return fmt.Errorf("upstream %s: %w", u.Name, err)
	}
	if u.Balance.AllowsBackup() {
		return nil
	}
	for _, s := range u.Servers {
		if s.Backup {
			return fmt.Errorf("upstream %s: server %v: %s does not support backup servers (nginx: balancing method does not support parameter \"backup\")", u.Name, s.Addr, u.Balance.Method)
		}
	}
	return nil
}

func isNameByte(c byte, first bool) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || !first && c >= '0' && c <= '9'
}

// AllowsBackup reports whether nginx accepts `backup` servers with this
// method: ip_hash and hash refuse them ("balancing method does not support
// parameter backup").
func (b Balance) AllowsBackup() bool { return b.Method != IPHash && b.Method != Hash }

// String is the configuration's spelling: "round_robin", "least_conn",
// "ip_hash", "hash KEY" or "hash KEY consistent".
func (b Balance) String() string {
	if b.Method == "" {
		return RoundRobin
	}
	return b.directive()
}

// directive is the statement inside the upstream block, without its
// semicolon; "" for round robin.
func (b Balance) directive() string {
	switch b.Method {
	case "":
		return ""
	case Hash:
		if b.Consistent {
			return "hash " + b.Key + " consistent"
		}
		return "hash " + b.Key
	}
	return b.Method
}

// RingMaxWeight bounds each server's weight in a consistent-hash upstream.
// nginx builds 160 ring points per unit of weight, real dyups rebuilds the
// ring in its workers on every POST, and the Lua module builds it on a
// request (about a microsecond a point). Registry weights go up to
// MaxWeight: two servers of weight 10000 make 3.2 million points, a POST
// that blocked real dyups for 1.5 s and a Lua request for seconds. The
// bound is per server, never a scaling of the whole set: a server's points
// then depend on that server alone, so a server joining or leaving moves
// only its own keys, which is what consistent hashing is for.
const RingMaxWeight = 10

// BoundRingWeights caps the weights of a consistent-hash upstream's
// servers at RingMaxWeight (weights above count as RingMaxWeight). It
// reports whether it changed a weight.
func (u *Upstream) BoundRingWeights() bool {
	if u.Balance.Method != Hash || !u.Balance.Consistent {
		return false
	}
	changed := false
	for i := range u.Servers {
		if u.Servers[i].Weight > RingMaxWeight {
			u.Servers[i].Weight, changed = RingMaxWeight, true
		}
	}
	return changed
}
