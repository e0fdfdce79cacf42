package wrapper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
	"github.com/swallowkeeper/swallowkeeper/internal/layout"
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

// Entry is the key and value the instance is registered under, encoded
// by package layout, which the daemon's etcd source decodes.
func (e *Etcd) Entry(o Options) (key, value string, err error) {
	if o.Address == "" {
		return "", "", fmt.Errorf("etcd: %s: an address is required (etcd has no agent to fill one in)", o.ID)
	}
	l, prefix := layout.Service, e.Prefix
	if e.Layout != "" {
		if l, err = layout.Parse(e.Layout, layout.Service, layout.Upsync); err != nil {
			return "", "", fmt.Errorf("etcd: %w", err)
		}
	}
	if prefix == "" {
		prefix = l.DefaultRoot()
	}
	path, v, err := l.Encode(prefix, o.registration())
	return path, string(v), err
}

// Register implements Registrar: a new lease, the key under it, and a
// keeper that keeps the lease alive and, if the lease is lost (etcd
// unreachable longer than the TTL), registers again, retrying until etcd
// answers or Deregister (or a new Register) ends it.
func (e *Etcd) Register(ctx context.Context, o Options) error {
	if _, _, err := e.Entry(o); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.want = true
	e.stopLocked()
	// The keeper's context is its whole life, not one attempt's: only
	// Deregister or the next Register cancel it.
	life, stop := context.WithCancel(context.Background())
	ka, err := e.putLocked(ctx, life, o)
	if err != nil {
		stop()
		return err
	}
	e.stopKA = stop
	go e.keep(life, ka, o)
	return nil
}

// putLocked grants a lease, puts the key under it and starts its
// keepalive, which runs until life ends. ctx bounds the grant and the put.
func (e *Etcd) putLocked(ctx, life context.Context, o Options) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	key, val, err := e.Entry(o)
	if err != nil {
		return nil, err
	}
	ttl := max(int64(e.TTL/time.Second), 2)
	g, err := e.Client.Grant(ctx, ttl)
	if err != nil {
		return nil, fmt.Errorf("etcd: lease for %s: %w", key, err)
	}
	if _, err := e.Client.Put(ctx, key, val, clientv3.WithLease(g.ID)); err != nil {
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		e.Client.Revoke(rctx, g.ID)
		cancel()
		return nil, fmt.Errorf("etcd: put %s: %w", key, err)
	}
	ka, err := e.Client.KeepAlive(life, g.ID)
	if err != nil {
		return nil, fmt.Errorf("etcd: keepalive of %s: %w", key, err)
	}
	e.key, e.lease = key, g.ID
	return ka, nil
}

// keep drains the keepalive answers. When they end while life goes on, the
// lease is gone (the client heard nothing for a whole TTL): it registers
// again under a new lease, retrying with backoff for as long as it takes.
func (e *Etcd) keep(life context.Context, ka <-chan *clientv3.LeaseKeepAliveResponse, o Options) {
	log := e.Log
	if log == nil {
		log = slog.Default()
	}
	for {
		for range ka {
		}
		if life.Err() != nil {
			return // deregistered or replaced
		}
		log.Warn("etcd: the lease was lost; registering again", "id", o.ID)
		b := backoff.New(200*time.Millisecond, 2*time.Second)
		for {
			e.mu.Lock()
			if !e.want || life.Err() != nil {
				e.mu.Unlock()
				return
			}
			rctx, cancel := context.WithTimeout(life, 5*time.Second)
			next, err := e.putLocked(rctx, life, o)
			cancel()
			e.mu.Unlock()
			if err == nil {
				log.Info("etcd: registered again", "id", o.ID, "key", e.keyNow())
				ka = next
				break
			}
			log.Warn("etcd: register again failed; retrying", "err", err)
			if backoff.Sleep(life, b.Next()) != nil {
				return
			}
		}
	}
}

func (e *Etcd) keyNow() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.key
}

// stopLocked ends the current keeper and its keepalive.
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
