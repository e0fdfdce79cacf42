// Package layout is how instances are laid out in the key-value registries,
// in one place for the side that reads them (the etcd and ZooKeeper
// sources) and the side that writes them (the register wrapper): one entry
// per instance, <root>/<dir>/<name>, whose name and value a Layout decodes
// (Decode) and encodes (Encode); the <ip>:<port> names (SplitHostPort,
// JoinHostPort); and the snapshot the sources build from one complete read
// of the tree (Tree.Snapshot) and send (Publisher). It does no I/O.
package layout

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/swallowkeeper/swallowkeeper/internal/registry"
)

// Layout says what an entry's directory, name and value mean.
type Layout string

const (
	// Upsync is nginx-upsync-module's layout (etcd):
	// <root>/<upstream>/<ip>:<port> ("[<ipv6>]:<port>") holding nothing or
	// a JSON object of server parameters, read as the module reads it:
	// weight, max_fails, fail_timeout (seconds, or with one unit s, m, h),
	// max_conns, down, backup, as numbers or decimal strings, keys in any
	// ASCII case.
	Upsync Layout = "upsync"
	// Service is a service registry layout (etcd):
	// <root>/<service>/<instance-id> holding
	// {"address":"10.0.0.1","port":8080,"tags":[…],"meta":{…},"healthy":true}.
	Service Layout = "service"
	// Curator is Apache Curator service discovery (ZooKeeper), which Spring
	// Cloud Zookeeper uses: <root>/<service>/<instance-id> holding Curator's
	// ServiceInstance JSON.
	Curator Layout = "curator"
	// Plain (ZooKeeper) is <root>/<service>/<ip>:<port> holding nothing or
	// a JSON object of nginx-upsync's server parameters, read strictly:
	// exact keys, JSON integers, flags 0, 1, true or false.
	Plain Layout = "plain"
)

// Parse checks a layout name against the layouts a registry offers.
func Parse(s string, offered ...Layout) (Layout, error) {
	names := make([]string, len(offered))
	for i, l := range offered {
		if string(l) == s {
			return l, nil
		}
		names[i] = fmt.Sprintf("%q", string(l))
	}
	return "", fmt.Errorf("unknown layout %q (want %s)", s, strings.Join(names, " or "))
}

// Decode converts the entry <root>/<dir>/<name> holding value into an
// instance of service dir, or says why the layout cannot read it. What it
// returns is still untrusted: registry.Build validates the address, the
// port, the names and every parameter.
func (l Layout) Decode(dir, name string, value []byte) (registry.Instance, error) {
	switch l {
	case Upsync:
		return decodeAddressed(dir, name, value, "instance name", upsyncParams)
	case Plain:
		return decodeAddressed(dir, name, value, "znode name", plainParams)
	case Service:
		return decodeService(dir, name, value)
	case Curator:
		return decodeCurator(dir, name, value)
	}
	return registry.Instance{}, fmt.Errorf("unknown layout %q", string(l))
}

// Registration is one instance as a registrar writes it.
type Registration struct {
	Service, ID string
	// Upstream is the nginx upstream the instance belongs in: Upsync and
	// Plain file the instance under it (their directory is the upstream).
	Upstream string
	Address  string // an IP literal
	Port     int
	Tags     []string
	Meta     map[string]string // Upsync and Plain take "weight" from it
	// Registered is Curator's registrationTimeUTC.
	Registered time.Time
}

// Encode returns the path under root and the value of the entry that
// registers r, such that Decode reads r back: the address, the port and,
// as far as the layout carries them, the tags, the meta and the weight.
func (l Layout) Encode(root string, r Registration) (path string, value []byte, err error) {
	switch l {
	case Upsync, Plain:
		value, err = encodeParams(r)
		return Join(root, r.Upstream, JoinHostPort(r.Address, r.Port)), value, err
	case Service:
		value, err = encodeService(r)
		return Join(root, r.Service, r.ID), value, err
	case Curator:
		value, err = encodeCurator(r)
		return Join(root, r.Service, r.ID), value, err
	}
	return "", nil, fmt.Errorf("unknown layout %q", string(l))
}

// DefaultRoot is where the layout's entries live unless configured
// otherwise: /upstreams for Upsync (nginx-upsync-module's), /services for
// the others (Curator's and Spring Cloud's).
func (l Layout) DefaultRoot() string {
	if l == Upsync {
		return "/upstreams"
	}
	return "/services"
}

// Join builds a path under root ("/", "/a/b" or "/a/b/"): root "/" and
// names web, a give /web/a.
func Join(root string, names ...string) string {
	return strings.TrimSuffix(root, "/") + "/" + strings.Join(names, "/")
}

// CleanRoot drops the trailing slashes of a root, "/" aside.
func CleanRoot(root string) string {
	if len(root) <= 1 {
		return root
	}
	if root = strings.TrimRight(root, "/"); root == "" {
		return "/"
	}
	return root
}

// CheckRoot refuses a root that is not an absolute path of non-empty
// elements (other than "." and ".."), in valid UTF-8 without control
// characters; "/" is allowed. kind names the path in the error ("key",
// "znode").
func CheckRoot(root, kind string) error {
	if !strings.HasPrefix(root, "/") {
		return fmt.Errorf("want an absolute %s path, /name[/name...]", kind)
	}
	if !utf8.ValidString(root) {
		return errors.New("not valid UTF-8")
	}
	for _, c := range root {
		if c < 0x20 || c == 0x7f {
			return errors.New("control character")
		}
	}
	if root != "/" {
		for _, part := range strings.Split(root[1:], "/") {
			if part == "" || part == "." || part == ".." {
				return errors.New(`empty, "." or ".." path element`)
			}
		}
	}
	return nil
}
