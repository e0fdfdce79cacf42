package wrapper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/layout"
	"github.com/swallowkeeper/swallowkeeper/internal/zkdial"
)

// ZooKeeper registers the instance as an ephemeral znode in the layout of
// Apache Curator's service discovery, as Spring Cloud Zookeeper apps do:
// <root>/<service>/<id> holding Curator's ServiceInstance JSON, with the
// tags as payload metadata (gray=canary → "gray":"canary"); or, with
// Layout plain, <root>/<upstream>/<ip>:<port> holding its weight. The znode lives
// as long as the wrapper's session: a wrapper killed with SIGKILL leaves
// within the session timeout. After a session expiry (ZooKeeper unreachable
// too long) the znode is created again on the new session.
//
// ACLs: without Auth, the znode and the parents it creates are
// world-writable (cdrwa), as Curator creates them by default: anyone who
// can reach ZooKeeper can delete or change the instance. With Auth (e.g.
// "digest:user:password") the session authenticates, and the znode and
// the parents it creates get the creator's identity with every permission
// and everyone else read only (the daemon reads without credentials).
// ZooKeeper checks a delete against the parent's ACL, so a parent that
// already exists with world create/delete still lets anyone delete the
// instance: the wrapper warns about it.
type ZooKeeper struct {
	Servers []string
	// Layout is "curator" (default) or "plain": <root>/<upstream>/<ip>:<port>
	// holding the weight, as the source's plain layout reads it.
	Layout         string
	Root           string // default /services
	SessionTimeout time.Duration
	// Auth is "<scheme>:<credentials>", e.g. "digest:user:password"; empty
	// means no authentication and world-writable znodes.
	Auth config.Secret
	Log  *slog.Logger

	mu   sync.Mutex
	conn *zk.Conn
	path string
	data []byte
	want bool // the instance should be registered
	open bool // warned that the znode is world-writable
}

// ParseZooKeeperAuth checks "<scheme>:<credentials>" ("digest:user:pass").
// Its errors never quote the value.
func ParseZooKeeperAuth(s config.Secret) (scheme string, credentials []byte, err error) {
	scheme, cred, ok := strings.Cut(strings.TrimSpace(s.Reveal()), ":")
	switch {
	case !ok || scheme == "" || cred == "":
		return "", nil, errors.New("zookeeper auth: want <scheme>:<credentials>, e.g. digest:user:password")
	case scheme == "digest" && !strings.Contains(cred, ":"):
		return "", nil, errors.New("zookeeper auth: digest wants user:password after digest:")
	}
	return scheme, []byte(cred), nil
}

// acl is the ACL of the znodes the wrapper creates.
func (z *ZooKeeper) acl() []zk.ACL {
	if z.Auth == "" {
		return zk.WorldACL(zk.PermAll)
	}
	return append(zk.AuthACL(zk.PermAll), zk.WorldACL(zk.PermRead)...)
}

func (z *ZooKeeper) log() *slog.Logger {
	if z.Log == nil {
		return slog.Default()
	}
	return z.Log
}

// ChecksLocally implements LocalChecker.
func (*ZooKeeper) ChecksLocally() {}

// Entry is the znode path and data the instance is registered under,
// encoded by package layout, which the daemon's ZooKeeper source decodes.
func (z *ZooKeeper) Entry(o Options) (string, []byte, error) {
	if o.Address == "" {
		return "", nil, fmt.Errorf("zookeeper: %s: an address is required (ZooKeeper has no agent to fill one in)", o.ID)
	}
	l, root := layout.Curator, z.Root
	if z.Layout != "" {
		var err error
		if l, err = layout.Parse(z.Layout, layout.Curator, layout.Plain); err != nil {
			return "", nil, fmt.Errorf("zookeeper: %w", err)
		}
	}
	if root == "" {
		root = l.DefaultRoot()
	}
	r := o.registration()
	r.Registered = time.Now()
	return l.Encode(root, r)
}

// Register implements Registrar.
func (z *ZooKeeper) Register(ctx context.Context, o Options) error {
	path, data, err := z.Entry(o)
	if err != nil {
		return err
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.conn == nil {
		timeout := z.SessionTimeout
		if timeout <= 0 {
			timeout = 10 * time.Second
		}
		var scheme string
		var cred []byte
		if z.Auth != "" {
			if scheme, cred, err = ParseZooKeeperAuth(z.Auth); err != nil {
				return err
			}
		}
		conn, events, err := zk.Connect(z.Servers, timeout, zk.WithLogger(quietZK{}), zk.WithDialer(zkdial.Bounded(timeout)))
		if err != nil {
			return fmt.Errorf("zookeeper: connect %v: %w", z.Servers, err)
		}
		if z.Auth != "" {
			// The client sends the credentials again on every reconnect.
			if err := bounded(ctx, func() error { return conn.AddAuth(scheme, cred) }); err != nil {
				conn.Close()
				return fmt.Errorf("zookeeper: authenticate (scheme %s): %w", scheme, err)
			}
		} else if !z.open {
			z.open = true
			z.log().Warn("zookeeper: no authentication: the instance's znode is world-writable (anyone who reaches ZooKeeper can delete or change it); see -zookeeper-auth-file")
		}
		z.conn = conn
		go z.follow(events)
	}
	z.path, z.data, z.want = path, data, true
	return z.createLocked(ctx)
}

// createLocked creates the parents (persistent) and the ephemeral znode;
// an existing znode of an earlier session of ours is replaced.
func (z *ZooKeeper) createLocked(ctx context.Context) error {
	conn, path, data, acl, auth := z.conn, z.path, z.data, z.acl(), z.Auth != ""
	log := z.log()
	return bounded(ctx, func() error {
		parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
		p := ""
		for _, part := range parts[:len(parts)-1] {
			p += "/" + part
			_, err := conn.Create(p, nil, 0, acl)
			if err == nil {
				continue
			}
			if !errors.Is(err, zk.ErrNodeExists) {
				return fmt.Errorf("zookeeper: create %s: %w", p, err)
			}
			if auth && p == parentOf(path) {
				warnOpenParent(conn, p, log)
			}
		}
		_, err := conn.Create(path, data, zk.FlagEphemeral, acl)
		if errors.Is(err, zk.ErrNodeExists) {
			// Left by our previous session (it expires in its own time):
			// replace it so that it is ours.
			if err = conn.Delete(path, -1); err == nil || errors.Is(err, zk.ErrNoNode) {
				_, err = conn.Create(path, data, zk.FlagEphemeral, acl)
			}
		}
		if err != nil {
			return fmt.Errorf("zookeeper: create %s: %w", path, err)
		}
		return nil
	})
}

// warnOpenParent warns when the instance's parent lets anyone create or
// delete children: ZooKeeper checks a delete against the parent's ACL.
func warnOpenParent(conn *zk.Conn, parent string, log *slog.Logger) {
	acls, _, err := conn.GetACL(parent)
	if err != nil {
		return
	}
	for _, a := range acls {
		if a.Scheme == "world" && a.ID == "anyone" && a.Perms&(zk.PermCreate|zk.PermDelete) != 0 {
			log.Warn("zookeeper: the parent znode lets anyone create and delete children: an unauthenticated client can still delete the instance; restrict its ACL", "parent", parent)
			return
		}
	}
}

func parentOf(path string) string {
	if i := strings.LastIndex(path, "/"); i > 0 {
		return path[:i]
	}
	return "/"
}

// bounded runs f, which go-zookeeper may block in for long, and returns at
// the latest when ctx ends.
func bounded(ctx context.Context, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// follow re-creates the znode when a new session replaces an expired one.
func (z *ZooKeeper) follow(events <-chan zk.Event) {
	expired := false
	for ev := range events {
		switch ev.State {
		case zk.StateExpired:
			expired = true
		case zk.StateHasSession:
			if !expired {
				continue
			}
			expired = false
			z.mu.Lock()
			if z.want {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := z.createLocked(ctx)
				cancel()
				log := z.log()
				if err != nil {
					log.Error("zookeeper: session expired and the instance could not be registered again", "err", err)
				} else {
					log.Warn("zookeeper: session expired; registered again on the new session", "path", z.path)
				}
			}
			z.mu.Unlock()
		}
	}
}

// Deregister implements Registrar: deletes the znode and ends the session.
func (z *ZooKeeper) Deregister(ctx context.Context, id string) error {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.want = false
	if z.conn == nil {
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- z.conn.Delete(z.path, -1) }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil && !errors.Is(err, zk.ErrNoNode) {
		return fmt.Errorf("zookeeper: delete %s: %w", z.path, err)
	}
	z.conn.Close()
	z.conn = nil
	return nil
}

type quietZK struct{}

func (quietZK) Printf(string, ...any) {}
