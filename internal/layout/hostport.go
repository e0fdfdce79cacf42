package layout

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/swallowkeeper/swallowkeeper/internal/jsonobj"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// SplitHostPort splits an entry name "<ip>:<port>" or "[<ipv6>]:<port>".
// Only the shape and the port's digits are checked here; registry.Build
// validates the address and the port's range. The port is 1 to 5 ASCII
// digits; brackets hold an IPv6 address (a host with a colon) and nothing
// else, and a host outside brackets holds no colon or bracket. The errors
// quote the name, clipped.
func SplitHostPort(name string) (string, int, error) {
	i := strings.LastIndexByte(name, ':')
	if i < 0 {
		return "", 0, fmt.Errorf("%s is not <ip>:<port>", jsonobj.Clip(name))
	}
	host, digits := name[:i], name[i+1:]
	if !asciiDigits(digits, 5) {
		return "", 0, fmt.Errorf("%s: port %s is not 1 to 5 ASCII digits", jsonobj.Clip(name), jsonobj.Clip(digits))
	}
	port, _ := strconv.Atoi(digits)
	if inner, ok := strings.CutPrefix(host, "["); ok {
		inner, ok = strings.CutSuffix(inner, "]")
		if !ok || !strings.Contains(inner, ":") {
			return "", 0, fmt.Errorf("%s: brackets hold only an IPv6 address", jsonobj.Clip(name))
		}
		return inner, port, nil
	}
	if strings.ContainsAny(host, ":[]") {
		return "", 0, fmt.Errorf("%s: an IPv6 address needs brackets, [addr]:port", jsonobj.Clip(name))
	}
	return host, port, nil
}

// JoinHostPort is the entry name of address and port as nginx lists the
// server: ip:port, [ipv6]:port, the address in its canonical form when it
// is an IP literal.
func JoinHostPort(address string, port int) string {
	ip, err := upstream.ParseIP(address)
	if err != nil || port < 0 || port > 65535 {
		return net.JoinHostPort(address, strconv.Itoa(port))
	}
	return netip.AddrPortFrom(ip, uint16(port)).String()
}

// asciiDigits reports whether s is 1 to max ASCII digits (not Unicode
// digits, not a sign, not spaces).
func asciiDigits(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
