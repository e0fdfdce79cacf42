package upstream

import (
	"net/netip"
	"strings"
	"testing"
)

func prefixes(t *testing.T, ss ...string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, s := range ss {
		p, err := ParsePrefix(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func TestAddressPolicy(t *testing.T) {
	tests := []struct {
		name        string
		allow, deny []string
		addr        string
		want        string // "" = allowed, else a part of the error
	}{
		{name: "a private address is allowed by default", addr: "10.0.0.1"},
		{name: "a public address is allowed by default", addr: "203.0.113.7"},
		{name: "a global IPv6 address is allowed by default", addr: "2001:db8::1"},
		{name: "loopback is refused by default", addr: "127.0.0.1", want: "is loopback (refused by default; upstreams.allow_addresses can allow it)"},
		{name: "all of 127/8 is loopback", addr: "127.45.0.9", want: "is loopback"},
		{name: "IPv6 loopback is refused", addr: "::1", want: "is loopback"},
		{name: "IPv4-mapped loopback is loopback", addr: "::ffff:127.0.0.1", want: "address 127.0.0.1 is loopback"},
		{name: "cloud metadata is link-local", addr: "169.254.169.254", want: "is link-local"},
		{name: "IPv6 link-local is refused", addr: "fe80::1", want: "is link-local"},
		{name: "multicast is refused", addr: "224.0.0.1", want: "is multicast"},
		{name: "IPv6 multicast is refused", addr: "ff02::1", want: "is multicast"},
		{name: "broadcast is refused", addr: "255.255.255.255", want: "is the broadcast address"},
		{name: "unspecified is refused", addr: "0.0.0.0", want: "this network"},
		{name: "IPv6 unspecified is refused", addr: "::", want: "is unspecified"},
		{name: "allow opts loopback in with the same prefix", allow: []string{"127.0.0.0/8"}, addr: "127.0.0.1"},
		{name: "allow of 127/8 does not open ::1", allow: []string{"127.0.0.0/8"}, addr: "::1", want: "is loopback"},
		{name: "allow of a mapped prefix counts as IPv4", allow: []string{"::ffff:127.0.0.0/104"}, addr: "127.0.0.1"},
		{name: "a longer deny beats a shorter allow", allow: []string{"127.0.0.0/8"}, deny: []string{"127.0.0.1"}, addr: "127.0.0.1", want: "is in upstreams.deny_addresses 127.0.0.1/32"},
		{name: "deny wins a tie with allow", allow: []string{"10.0.0.0/8"}, deny: []string{"10.0.0.0/8"}, addr: "10.1.2.3", want: "deny_addresses 10.0.0.0/8"},
		{name: "deny everything, allow one range: inside", allow: []string{"10.0.0.0/8"}, deny: []string{"0.0.0.0/0", "::/0"}, addr: "10.9.9.9"},
		{name: "deny everything, allow one range: outside", allow: []string{"10.0.0.0/8"}, deny: []string{"0.0.0.0/0", "::/0"}, addr: "192.168.1.1", want: "deny_addresses 0.0.0.0/0"},
		{name: "a short allow does not open a longer built-in range", allow: []string{"0.0.0.0/0"}, addr: "169.254.169.254", want: "is link-local"},
		{name: "allowing metadata takes its own prefix", allow: []string{"169.254.169.254"}, addr: "169.254.169.254"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := AddressPolicy{Allow: prefixes(t, tt.allow...), Deny: prefixes(t, tt.deny...)}
			err := p.Check(netip.MustParseAddr(tt.addr))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("allowed, want refused with %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("error %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParsePrefix(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/8":           "10.0.0.0/8",
		"10.1.2.3/8":           "10.0.0.0/8",
		"10.0.0.1":             "10.0.0.1/32",
		" 2001:db8::/32 ":      "2001:db8::/32",
		"::1":                  "::1/128",
		"::ffff:10.0.0.0/104":  "10.0.0.0/8",
		"::ffff:127.0.0.1":     "127.0.0.1/32",
		"fe80::1%eth0":         "error",
		"example.com":          "error",
		"10.0.0.0/33":          "error",
		"":                     "error",
		"10.0.0.0/8; deny all": "error",
	} {
		p, err := ParsePrefix(in)
		got := p.String()
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Errorf("ParsePrefix(%q) = %s (%v), want %s", in, got, err, want)
		}
	}
}

func TestParseIPRefusesIPv4CompatibleForms(t *testing.T) {
	// nginx prints ::1.2.3.4 as [::1.2.3.4] and Go as [::102:304]: a
	// server on such an address could never be found in /detail again.
	for _, s := range []string{"::1.2.3.4", "::abcd", "::0.0.171.205", "::102:304"} {
		if _, err := ParseIP(s); err == nil || !strings.Contains(err.Error(), "IPv4-compatible") {
			t.Errorf("ParseIP(%q) = %v, want refused as IPv4-compatible", s, err)
		}
	}
	for _, s := range []string{"::1", "::ffff:1.2.3.4", "2001:db8::1.2.3.4", "64:ff9b::1.2.3.4"} {
		if _, err := ParseIP(s); err != nil {
			t.Errorf("ParseIP(%q): %v", s, err)
		}
	}
}

func TestStateCheckNames(t *testing.T) {
	srv := func(addr string, backup bool) Server {
		return Server{Addr: netip.MustParseAddrPort(addr), Weight: 1, Backup: backup}
	}
	tests := []struct {
		name string
		st   State
		want string
	}{
		{name: "distinct names with primaries pass", st: State{
			"web": {Name: "web", Servers: []Server{srv("10.0.0.1:80", false)}},
			"api": {Name: "api", Servers: []Server{srv("10.0.0.2:80", false), srv("10.0.0.3:80", true)}},
		}},
		{name: "names equal but for case fail", st: State{
			"api": {Name: "api", Servers: []Server{srv("10.0.0.1:80", false)}},
			"Api": {Name: "Api", Servers: []Server{srv("10.0.0.2:80", false)}},
		}, want: "upstreams Api and api differ only in case"},
		{name: "an upstream of backups only fails", st: State{
			"web": {Name: "web", Servers: []Server{srv("10.0.0.1:80", true)}},
		}, want: "upstream web: no primary server"},
		{name: "an upstream with no servers fails", st: State{
			"web": {Name: "web"},
		}, want: "upstream web: no primary server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.st.CheckNames()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if err := tt.st.Validate(); err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
			if err := tt.st.Validate(); err == nil {
				t.Fatal("Validate passed what CheckNames refused")
			}
		})
	}
}

func TestAddressPolicyEqualComparesEveryList(t *testing.T) {
	p := func(allow, deny string) AddressPolicy {
		var a AddressPolicy
		if allow != "" {
			a.Allow = []netip.Prefix{netip.MustParsePrefix(allow)}
		}
		if deny != "" {
			a.Deny = []netip.Prefix{netip.MustParsePrefix(deny)}
		}
		return a
	}
	base := p("127.0.0.0/8", "10.9.0.0/16")
	for _, tc := range []struct {
		other AddressPolicy
		want  bool
	}{
		{p("127.0.0.0/8", "10.9.0.0/16"), true},
		{p("", "10.9.0.0/16"), false},
		{p("127.0.0.0/8", ""), false},
		{p("127.0.0.1/32", "10.9.0.0/16"), false},
	} {
		if got := base.Equal(tc.other); got != tc.want {
			t.Errorf("%v Equal %v = %v, want %v", base, tc.other, got, tc.want)
		}
	}
}
