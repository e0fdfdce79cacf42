package upstream

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// AddressPolicy decides which server addresses registry data may point
// nginx at. Whoever can write the registry can register an instance; the
// policy keeps them from aiming nginx at the host itself (its loopback
// admin APIs, the upstream API of nginx), at cloud metadata (link-local)
// or at addresses that are not a single host (multicast, broadcast,
// unspecified).
//
// The zero value refuses exactly the built-in ranges (RefusedByDefault).
// Allow and Deny add the operator's own prefixes. For an address, the
// longest prefix that contains it decides; the operator's prefixes beat
// built-in ones of the same length, and on a tie between the operator's
// allow and deny, deny wins. So `allow: [127.0.0.0/8]` opts loopback in,
// `deny: [0.0.0.0/0, ::/0]` with `allow: [10.0.0.0/8]` accepts 10/8 only,
// and `allow: [127.0.0.0/8]` with `deny: [127.0.0.1/32]` keeps one address
// out.
type AddressPolicy struct {
	Allow []netip.Prefix
	Deny  []netip.Prefix
}

// Equal reports whether p and o refuse the same addresses. What the engine
// remembers as allowed is voided when the policy is not Equal to the one
// it was checked under: a field added here must be compared here.
func (p AddressPolicy) Equal(o AddressPolicy) bool {
	return slices.Equal(p.Allow, o.Allow) && slices.Equal(p.Deny, o.Deny)
}

// RefusedByDefault lists the ranges no registry entry may use unless the
// operator allows them, with the reason given when one is refused.
var RefusedByDefault = []struct {
	Prefix netip.Prefix
	Why    string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "is in 0.0.0.0/8 (this network)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "is loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "is link-local (cloud metadata lives here)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "is multicast"},
	{netip.MustParsePrefix("255.255.255.255/32"), "is the broadcast address"},
	{netip.MustParsePrefix("::/128"), "is unspecified"},
	{netip.MustParsePrefix("::1/128"), "is loopback"},
	{netip.MustParsePrefix("fe80::/10"), "is link-local"},
	{netip.MustParsePrefix("ff00::/8"), "is multicast"},
}

// ipv4Compatible reports the deprecated IPv4-compatible IPv6 form
// ::a.b.c.d (RFC 4291 2.5.5.1): the first 96 bits zero, other than :: and
// ::1. nginx prints many of them as [::a.b.c.d] where Go prints hex
// ([::102:304]), so /detail could never be matched against what we sent.
func ipv4Compatible(a netip.Addr) bool {
	if !a.Is6() || a.Is4In6() {
		return false
	}
	b := a.As16()
	for _, x := range b[:12] {
		if x != 0 {
			return false
		}
	}
	return a != netip.IPv6Unspecified() && a != netip.IPv6Loopback()
}

// ParsePrefix accepts a CIDR ("10.0.0.0/8") or a single address
// ("10.0.0.1", a /32 or /128), as config files write them. An IPv4-mapped
// IPv6 prefix is taken as its IPv4 form, as addresses are.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is neither an IP address nor a CIDR prefix (want e.g. 10.0.0.0/8 or 2001:db8::/32)", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR prefix (want e.g. 10.0.0.0/8 or 2001:db8::/32)", s)
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// Check returns nil when a may be a server address, or why not. a is
// taken in its unmapped form, so ::ffff:127.0.0.1 is loopback too.
func (p AddressPolicy) Check(a netip.Addr) error {
	a = a.Unmap()
	best, bestBits, allowed := "", -1, true
	for _, r := range RefusedByDefault {
		if r.Prefix.Contains(a) && r.Prefix.Bits() > bestBits {
			best, bestBits, allowed = r.Why, r.Prefix.Bits(), false
		}
	}
	// The operator's prefixes beat built-in ones of the same length (>=),
	// and among the operator's, deny is looked at last so that it wins a
	// tie.
	for _, pr := range p.Allow {
		if pr.Contains(a) && pr.Bits() >= bestBits {
			best, bestBits, allowed = "", pr.Bits(), true
		}
	}
	for _, pr := range p.Deny {
		if pr.Contains(a) && pr.Bits() >= bestBits {
			best, bestBits, allowed = "is in upstreams.deny_addresses "+pr.String(), pr.Bits(), false
		}
	}
	if allowed {
		return nil
	}
	hint := ""
	if !strings.HasPrefix(best, "is in upstreams.deny") {
		hint = " (refused by default; upstreams.allow_addresses can allow it)"
	}
	return fmt.Errorf("address %v %s%s", a, best, hint)
}
