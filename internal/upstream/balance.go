package upstream

import (
	"errors"
	"fmt"
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

// ValidHashKey checks a hash key. It goes into the rendered file and the
// dyups body as one nginx word, so it is held to a narrow alphabet that can
// carry no nginx syntax (no blank, quote, brace, semicolon, hash sign or
// backslash): "$name" variables (name [A-Za-z_][A-Za-z0-9_]*; the ${name}
// form is not accepted) and literal runs of [A-Za-z0-9_.:/-]. At least one
// variable is required: a constant key sends everything to one server.
// Whether nginx knows a variable is checked by nginx (nginx -t, the dyups
// POST); $http_*, $cookie_* and $arg_* are always known.
func ValidHashKey(key string) error {
	if key == "" {
		return errors.New("hash needs a key, e.g. $remote_addr")
	}
	if len(key) > MaxHashKeyLen {
		return fmt.Errorf("hash key longer than %d bytes", MaxHashKeyLen)
	}
	vars := 0
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
			vars++
			i = j - 1
			continue
		}
		if !isNameByte(c, false) && c != '.' && c != ':' && c != '/' && c != '-' {
			return fmt.Errorf("hash key %q: character %q at byte %d is not allowed (want $variables and [A-Za-z0-9_.:/-])", key, c, i)
		}
	}
	if vars == 0 {
		return fmt.Errorf("hash key %q has no $variable: every request would go to one server", key)
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
