package register

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/swallowkeeper/swallowkeeper/internal/zkdial"
)

// ZooKeeper registers the instance as an ephemeral znode in the layout of
// Apache Curator's service discovery, as Spring Cloud Zookeeper apps do:
// <root>/<service>/<id> holding Curator's ServiceInstance JSON, with the
// tags as payload metadata (gray=canary → "gray":"canary"). The znode lives
// as long as the wrapper's session: a wrapper killed with SIGKILL leaves
// within the session timeout. After a session expiry (ZooKeeper unreachable
// too long) the znode is created again on the new session.
type ZooKeeper struct {
	Servers        []string
	Root           string // default /services
	SessionTimeout time.Duration
	Log            *slog.Logger

	mu   sync.Mutex
	conn *zk.Conn
	path string
	data []byte
	want bool // the instance should be registered
}

// ChecksLocally implements LocalChecker.
func (*ZooKeeper) ChecksLocally() {}

// Entry is the znode path and data the instance is registered under.
func (z *ZooKeeper) Entry(o Options) (string, []byte, error) {
	root := z.Root
	if root == "" {
		root = "/services"
	}
	meta := map[string]string{"instance_status": "UP"}
	for k, v := range o.Meta {
		meta[k] = v
	}
	for _, t := range o.Tags {
		k, v, _ := strings.Cut(t, "=")
		meta[k] = v
	}
	type payload struct {
		Class    string            `json:"@class"`
		ID       string            `json:"id"`
		Name     string            `json:"name"`
		Metadata map[string]string `json:"metadata"`
	}
	b, err := json.Marshal(struct {
		Name        string         `json:"name"`
		ID          string         `json:"id"`
		Address     string         `json:"address"`
		Port        int            `json:"port"`
		SSLPort     *int           `json:"sslPort"`
		Payload     payload        `json:"payload"`
		Registered  int64          `json:"registrationTimeUTC"`
		ServiceType string         `json:"serviceType"`
		URISpec     map[string]any `json:"uriSpec"`
		Enabled     bool           `json:"enabled"`
	}{o.Service, o.ID, o.Address, o.Port, nil,
		payload{"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance", o.Service, o.Service, meta},
		time.Now().UnixMilli(), "DYNAMIC", map[string]any{"parts": []any{}}, true})
	if err != nil {
		return "", nil, err
	}
	return strings.TrimSuffix(root, "/") + "/" + o.Service + "/" + o.ID, b, nil
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
		conn, events, err := zk.Connect(z.Servers, timeout, zk.WithLogger(quietZK{}), zk.WithDialer(zkdial.Bounded(timeout)))
		if err != nil {
			return fmt.Errorf("zookeeper: connect %v: %w", z.Servers, err)
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
	done := make(chan error, 1)
	go func() {
		parts := strings.Split(strings.TrimPrefix(z.path, "/"), "/")
		p := ""
		for _, part := range parts[:len(parts)-1] {
			p += "/" + part
			if _, err := z.conn.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
				done <- fmt.Errorf("zookeeper: create %s: %w", p, err)
				return
			}
		}
		_, err := z.conn.Create(z.path, z.data, zk.FlagEphemeral, zk.WorldACL(zk.PermAll))
		if errors.Is(err, zk.ErrNodeExists) {
			// Left by our previous session (it expires in its own time):
			// replace it so that it is ours.
			if err = z.conn.Delete(z.path, -1); err == nil || errors.Is(err, zk.ErrNoNode) {
				_, err = z.conn.Create(z.path, z.data, zk.FlagEphemeral, zk.WorldACL(zk.PermAll))
			}
		}
		if err != nil {
			err = fmt.Errorf("zookeeper: create %s: %w", z.path, err)
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("zookeeper: create %s: %w", z.path, ctx.Err())
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
				log := z.Log
				if log == nil {
					log = slog.Default()
				}
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
