package upstream

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Limits on what we render. They follow nginx where nginx has a limit and
// are otherwise generous bounds that keep a hostile value from producing an
// absurd config.
const (
	MaxNameLen     = 200
	MaxWeight      = 10000 // nginx rejects larger weights with "invalid parameter"
	MaxMaxFails    = 1000
	MaxFailTimeout = 24 * time.Hour
	MaxMaxConns    = 1_000_000
	MaxKeepalive   = 100_000
)

// ValidName reports whether name may be an upstream name: it goes into the
// dyups URL path and into nginx configuration, so only a conservative
// alphabet is allowed: [A-Za-z0-9][A-Za-z0-9_.-]*.
func ValidName(name string) error {
	if name == "" {
		return errors.New("empty upstream name")
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("upstream name longer than %d bytes", MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if alnum || i > 0 && (c == '_' || c == '.' || c == '-') {
			continue
		}
		return fmt.Errorf("upstream name %q: character %q at byte %d is not allowed (want [A-Za-z0-9][A-Za-z0-9_.-]*)", name, c, i)
	}
	return nil
}

// ParseIP accepts only an IP literal (IPv4 or IPv6, no zone, no brackets).
// Hostnames are refused: dyups would resolve them inside an nginx worker with
// a blocking lookup.
func ParseIP(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, errors.New("empty address")
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("address %q is not an IP literal", s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("address %q has an IPv6 zone", s)
	}
	if a.IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("address %q is unspecified", s)
	}
	if ipv4Compatible(a) {
		return netip.Addr{}, fmt.Errorf("address %q is an IPv4-compatible IPv6 address (deprecated; write the IPv4 address)", s)
	}
	return a.Unmap(), nil
}

// ValidPort checks a port number from the registry.
func ValidPort(p int) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("port %d out of range 1-65535", p)
	}
	return nil
}

// Validate checks every parameter of s. NewServer and the parser call it;
// anything rendered has passed it.
func (s Server) Validate() error {
	if !s.Addr.IsValid() || s.Addr.Addr().IsUnspecified() || s.Addr.Addr().Zone() != "" {
		return fmt.Errorf("invalid address %v", s.Addr)
	}
	if err := ValidPort(int(s.Addr.Port())); err != nil {
		return err
	}
	if err := inRange("weight", s.Weight, 1, MaxWeight); err != nil {
		return err
	}
	if err := inRange("max_fails", s.MaxFails, 0, MaxMaxFails); err != nil {
		return err
	}
	if s.FailTimeout < 0 || s.FailTimeout > MaxFailTimeout || s.FailTimeout%time.Second != 0 {
		return fmt.Errorf("fail_timeout %v: want whole seconds from 0s to %v", s.FailTimeout, MaxFailTimeout)
	}
	return inRange("max_conns", s.MaxConns, 0, MaxMaxConns)
}

// Validate checks the upstream's name, keepalive, balancing method and
// every server (no backup server under ip_hash or hash), and that
// no address appears twice (nginx would send it double traffic).
func (u Upstream) Validate() error {
	if err := ValidName(u.Name); err != nil {
		return err
	}
	if err := inRange("keepalive", u.Keepalive, 0, MaxKeepalive); err != nil {
		return fmt.Errorf("upstream %s: %w", u.Name, err)
	}
	if err := u.Balance.Validate(); err != nil {
		return fmt.Errorf("upstream %s: %w", u.Name, err)
	}
	if len(u.Servers) == 0 {
		return fmt.Errorf("upstream %s: no servers", u.Name)
	}
	seen := make(map[netip.AddrPort]bool, len(u.Servers))
	for _, s := range u.Servers {
		if err := s.Validate(); err != nil {
			return fmt.Errorf("upstream %s: server %v: %w", u.Name, s.Addr, err)
		}
		if seen[s.Addr] {
			return fmt.Errorf("upstream %s: server %v listed twice", u.Name, s.Addr)
		}
		if s.Backup && !u.Balance.AllowsBackup() {
			return fmt.Errorf("upstream %s: server %v: %s does not support backup servers (nginx: balancing method does not support parameter \"backup\")", u.Name, s.Addr, u.Balance.Method)
		}
		seen[s.Addr] = true
	}
	return nil
}

func inRange(what string, v, lo, hi int) error {
	if v < lo || v > hi {
		return fmt.Errorf("%s %d out of range %d-%d", what, v, lo, hi)
	}
	return nil
}

// ParseCount parses a non-negative decimal integer from untrusted text
// (service meta, for example) and checks it against [lo, hi].
func ParseCount(what, s string, lo, hi int) (int, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < math.MinInt32 || n > math.MaxInt32 {
		return 0, fmt.Errorf("%s %q is not an integer", what, s)
	}
	return int(n), inRange(what, int(n), lo, hi)
}

// HasPrimary reports whether the upstream has a server that is not
// `backup`: nginx refuses an upstream without one ("no servers in
// upstream"), and so does dyups' POST.
func (u Upstream) HasPrimary() bool {
	for _, s := range u.Servers {
		if !s.Backup {
			return true
		}
	}
	return false
}

// Validate checks what nginx checks of a whole file (`nginx -t`): every
// upstream valid and with a primary server, and no two names equal
// case-insensitively. A state that passes renders a file nginx accepts.
func (s State) Validate() error {
	for name, u := range s {
		if err := u.Validate(); err != nil {
			return err
		}
		if u.Name != name {
			return fmt.Errorf("upstream %s stored under the name %s", u.Name, name)
		}
	}
	return s.CheckNames()
}

// CheckNames is the part of Validate that looks at the set rather than at
// each server: names unique case-insensitively and a primary server in
// every upstream. It costs one pass over the upstreams, so the engine runs
// it on every plan (servers were validated when they were built).
func (s State) CheckNames() error {
	folded := make(map[string]string, len(s))
	var errs []string
	for name, u := range s {
		if !u.HasPrimary() {
			errs = append(errs, fmt.Sprintf("upstream %s: no primary server (nginx: no servers in upstream)", name))
		}
		k := FoldKey(name)
		if other, dup := folded[k]; dup {
			a, b := min(name, other), max(name, other)
			errs = append(errs, fmt.Sprintf("upstreams %s and %s differ only in case (nginx: duplicate upstream)", a, b))
		}
		folded[k] = name
	}
	if len(errs) == 0 {
		return nil
	}
	slices.Sort(errs)
	return errors.New(strings.Join(errs, "; "))
}
