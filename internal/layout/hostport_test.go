package layout

import (
	"strings"
	"testing"
)

// One splitter for every layout that names an entry <ip>:<port>: the
// stricter of the two the sources had (etcd's), which also refuses a stray
// bracket outside brackets.
func TestSplitHostPort(t *testing.T) {
	for _, c := range []struct {
		name, host string
		port       int
	}{
		{"10.0.0.1:8080", "10.0.0.1", 8080},
		{"[2001:db8::1]:80", "2001:db8::1", 80},
		{"[::1]:9100", "::1", 9100},
		{"web.internal:8080", "web.internal", 8080}, // Build refuses it
		{"10.0.0.1:0", "10.0.0.1", 0},               // Build refuses it
		{"10.0.0.1:99999", "10.0.0.1", 99999},       // Build refuses it
		{":80", "", 80},                             // Build refuses it
	} {
		host, port, err := SplitHostPort(c.name)
		if err != nil || host != c.host || port != c.port {
			t.Errorf("SplitHostPort(%q) = %q, %d, %v; want %q, %d", c.name, host, port, err, c.host, c.port)
		}
	}
	for _, c := range []struct{ name, err string }{
		{"10.0.0.1", "not <ip>:<port>"},
		{"", "not <ip>:<port>"},
		{"10.0.0.1:", "ASCII digits"},
		{"10.0.0.1:+80", "ASCII digits"},
		{"10.0.0.1:-1", "ASCII digits"},
		{"10.0.0.1: 80", "ASCII digits"},
		{"10.0.0.1:８０", "ASCII digits"},
		{"10.0.0.1:000080", "ASCII digits"},
		{"10.0.0.1:80;", "ASCII digits"},
		{"10.0.0.1:80;server 6.6.6.6:80", "needs brackets"},
		{"2001:db8::1:80", "needs brackets"},
		{"10.0.0.1]:80", "needs brackets"},
		{"10.0.0.1[:80", "needs brackets"},
		{"[10.0.0.1]:80", "only an IPv6"},
		{"[2001:db8::1:80", "only an IPv6"},
		{"[2001:db8::1]x:80", "only an IPv6"},
		{"[]:80", "only an IPv6"},
	} {
		_, _, err := SplitHostPort(c.name)
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("SplitHostPort(%q): error %v, want one containing %q", c.name, err, c.err)
		}
		if err != nil && strings.ContainsAny(err.Error(), "\n\r") {
			t.Errorf("SplitHostPort(%q): error carries a raw line break: %q", c.name, err)
		}
	}
}

// JoinHostPort writes what SplitHostPort reads, in nginx's form.
func TestJoinHostPortRoundTrips(t *testing.T) {
	for _, c := range []struct {
		address string
		port    int
		name    string
	}{
		{"10.0.0.1", 8080, "10.0.0.1:8080"},
		{"2001:db8::1", 80, "[2001:db8::1]:80"},
		{"2001:DB8:0::1", 80, "[2001:db8::1]:80"},
		{"::ffff:10.0.0.1", 80, "10.0.0.1:80"},
		{"web.internal", 8080, "web.internal:8080"},
	} {
		name := JoinHostPort(c.address, c.port)
		if name != c.name {
			t.Errorf("JoinHostPort(%q, %d) = %q, want %q", c.address, c.port, name, c.name)
		}
		if _, port, err := SplitHostPort(name); err != nil || port != c.port {
			t.Errorf("SplitHostPort(%q) = %d, %v; want port %d", name, port, err, c.port)
		}
	}
	if got := JoinHostPort("10.0.0.1", 70000); got != "10.0.0.1:70000" {
		t.Errorf("an out-of-range port wrapped around: %q", got)
	}
}

func TestRoots(t *testing.T) {
	for root, want := range map[string]string{"/": "/", "/a/b": "/a/b", "/a/b/": "/a/b", "/a//": "/a", "//": "/", "": ""} {
		if got := CleanRoot(root); got != want {
			t.Errorf("CleanRoot(%q) = %q, want %q", root, got, want)
		}
	}
	for _, c := range []struct{ root, names, want string }{
		{"/", "web/a", "/web/a"},
		{"/services", "web/a", "/services/web/a"},
		{"/services/", "web/a", "/services/web/a"},
		{"/upstreams", "", "/upstreams/"},
	} {
		var names []string
		if c.names != "" {
			names = strings.Split(c.names, "/")
		}
		if got := Join(c.root, names...); got != c.want {
			t.Errorf("Join(%q, %q) = %q, want %q", c.root, names, got, c.want)
		}
	}
	for _, root := range []string{"/", "/services", "/v2/keys/upstreams", "/a/b-c/d.e"} {
		if err := CheckRoot(root, "key"); err != nil {
			t.Errorf("CheckRoot(%q): %v", root, err)
		}
	}
	for root, want := range map[string]string{
		"":         "want an absolute znode path",
		"services": "want an absolute znode path",
		"/a//b":    `empty, "." or ".." path element`,
		"/a/./b":   `empty, "." or ".." path element`,
		"/a/../b":  `empty, "." or ".." path element`,
		"/a/":      `empty, "." or ".." path element`,
		"/a\nb":    "control character",
		"/a\x7fb":  "control character",
		"/a\xffb":  "not valid UTF-8",
	} {
		if err := CheckRoot(root, "znode"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckRoot(%q): %v, want an error containing %q", root, err, want)
		}
	}
}

func TestParse(t *testing.T) {
	if l, err := Parse("plain", Curator, Plain); err != nil || l != Plain {
		t.Errorf("Parse(plain) = %q, %v", l, err)
	}
	for _, s := range []string{"", "Plain", "upsync"} {
		if _, err := Parse(s, Curator, Plain); err == nil || !strings.Contains(err.Error(), `(want "curator" or "plain")`) {
			t.Errorf("Parse(%q): %v, want an error naming the layouts offered", s, err)
		}
	}
	for l, want := range map[Layout]string{Upsync: "/upstreams", Service: "/services", Curator: "/services", Plain: "/services"} {
		if got := l.DefaultRoot(); got != want {
			t.Errorf("%s: default root %q, want %q", l, got, want)
		}
	}
	if _, err := Layout("x").Decode("web", "10.0.0.1:80", nil); err == nil {
		t.Error("an unknown layout decoded an entry")
	}
	if _, _, err := Layout("x").Encode("/", Registration{}); err == nil {
		t.Error("an unknown layout encoded an entry")
	}
}
