package register

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
)

// Etcd registers the instance as one key under a lease: if the wrapper dies
// without deregistering, the lease expires after TTL and the key goes. The
// key and value follow the layouts the daemon's etcd source reads:
//
//	service: <prefix>/<service>/<id> = {"address","port","tags","meta"}
//	upsync:  <prefix>/<upstream>/<ip>:<port> = {"weight":W} (nginx-upsync)
//
// etcd runs no health checks, so the wrapper runs the instance's check
// itself (see LocalChecker).
type Etcd struct {
	Client *clientv3.Client
	Layout string // "service" (default) or "upsync"
	Prefix string // default /services (service) or /upstreams (upsync)
	TTL    time.Duration
	Log    *slog.Logger

	mu     sync.Mutex
	want   bool // registered by the wrapper, not deregistered since
	key    string
	lease  clientv3.LeaseID
	stopKA context.CancelFunc
}

// ChecksLocally implements LocalChecker.
func (*Etcd) ChecksLocally() {}

// Entry is the key and value the instance is registered under.
func (e *Etcd) Entry(o Options) (key, value string, err error) {
	switch e.Layout {
	case "", "service":
		prefix := e.Prefix
		if prefix == "" {
			prefix = "/services"
		}
		b, err := json.Marshal(struct {
			Address string            `json:"address"`
			Port    int               `json:"port"`
			Tags    []string          `json:"tags,omitempty"`
			Meta    map[string]string `json:"meta,omitempty"`
		}{o.Address, o.Port, o.Tags, o.Meta})
		if err != nil {
			return "", "", err
		}
		return strings.TrimSuffix(prefix, "/") + "/" + o.Service + "/" + o.ID, string(b), nil
	case "upsync":
		prefix := e.Prefix
		if prefix == "" {
			prefix = "/upstreams"
		}
		weight := 1
		if w, ok := o.Meta["weight"]; ok {
			n, err := strconv.Atoi(w)
			if err != nil {
				return "", "", fmt.Errorf("meta weight %q: %w", w, err)
			}
			weight = n
		}
		return strings.TrimSuffix(prefix, "/") + "/" + o.Upstream + "/" + addrPort(o).String(),
			fmt.Sprintf(`{"weight":%d,"down":0}`, weight), nil
	}
	return "", "", fmt.Errorf("etcd: unknown layout %q (want service or upsync)", e.Layout)
}

// Register implements Registrar: a new lease, the key under it, and a
// keepalive that re-registers if the lease is lost (etcd down longer than
// the TTL).
func (e *Etcd) Register(ctx context.Context, o Options) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.want = true
	return e.registerLocked(ctx, o)
}

func (e *Etcd) registerLocked(ctx context.Context, o Options) error {
	key, val, err := e.Entry(o)
	if err != nil {
		return err
	}
	e.stopLocked()
	ttl := max(int64(e.TTL/time.Second), 2)
	g, err := e.Client.Grant(ctx, ttl)
	if err != nil {
		return fmt.Errorf("etcd: lease for %s: %w", key, err)
	}
	if _, err := e.Client.Put(ctx, key, val, clientv3.WithLease(g.ID)); err != nil {
		e.Client.Revoke(context.WithoutCancel(ctx), g.ID)
		return fmt.Errorf("etcd: put %s: %w", key, err)
	}
	kactx, stop := context.WithCancel(context.Background())
	ka, err := e.Client.KeepAlive(kactx, g.ID)
	if err != nil {
		stop()
		return fmt.Errorf("etcd: keepalive of %s: %w", key, err)
	}
	e.key, e.lease, e.stopKA = key, g.ID, stop
	go e.keepAlive(kactx, ka, o)
	return nil
}

// keepAlive drains the keepalive answers; when they end while the
// registration is wanted, the lease is gone: register again.
func (e *Etcd) keepAlive(ctx context.Context, ka <-chan *clientv3.LeaseKeepAliveResponse, o Options) {
	for range ka {
	}
	if ctx.Err() != nil {
		return // deregistered or replaced
	}
	log := e.Log
	if log == nil {
		log = slog.Default()
	}
	log.Warn("etcd: the lease was lost; registering again", "id", o.ID)
	b := backoff.New(200*time.Millisecond, 5*time.Second)
	for {
		e.mu.Lock()
		if !e.want || ctx.Err() != nil {
			e.mu.Unlock()
			return
		}
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := e.registerLocked(rctx, o)
		cancel()
		e.mu.Unlock()
		if err == nil {
			return
		}
		log.Warn("etcd: register again failed", "err", err)
		if backoff.Sleep(ctx, b.Next()) != nil {
			return
		}
	}
}

func (e *Etcd) stopLocked() {
	if e.stopKA != nil {
		e.stopKA()
		e.stopKA = nil
	}
}

// Deregister implements Registrar: deletes the key and revokes its lease.
func (e *Etcd) Deregister(ctx context.Context, id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.want = false
	e.stopLocked()
	if e.key == "" {
		return nil
	}
	var errs []error
	if _, err := e.Client.Delete(ctx, e.key); err != nil {
		errs = append(errs, fmt.Errorf("etcd: delete %s: %w", e.key, err))
	}
	if _, err := e.Client.Revoke(ctx, e.lease); err != nil && !strings.Contains(err.Error(), "requested lease not found") {
		errs = append(errs, fmt.Errorf("etcd: revoke lease of %s: %w", e.key, err))
	}
	if len(errs) == 0 {
		e.key = ""
	}
	return errors.Join(errs...)
}
