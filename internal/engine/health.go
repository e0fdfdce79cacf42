package engine

import (
	"sync"
	"time"
)

// Health is whether a source reaches its registry. While it does not,
// nothing changes in nginx (the source sends nothing), which is the point;
// Health makes the outage visible on the status page and in `status`.
type Health struct {
	Up    bool
	Error string    // the last error while down
	Since time.Time // when Up last changed
}

// HealthReporter is a Source that can tell its Health.
type HealthReporter interface {
	Health() Health
}

// Reachability keeps a source's Health from the outcomes of its
// connections (keyed, e.g. one per watch): up when every connection's last
// outcome succeeded. Safe for concurrent use; the zero value is "not
// connected yet".
type Reachability struct {
	mu      sync.Mutex
	state   map[string]string // key → last error, "" when up
	failing int               // keys in state with an error
	since   time.Time
	up      bool
}

// Report records the outcome of the connection named key. It costs the
// same whatever the number of keys: a Consul source with a follower per
// service reports on every answer of each of thousands of long polls.
func (r *Reachability) Report(key string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == nil {
		r.state = map[string]string{}
	}
	msg := ""
	if err != nil {
		msg = err.Error()
		if msg == "" {
			msg = "error"
		}
	}
	if old, ok := r.state[key]; ok && old != "" {
		r.failing--
	}
	if msg != "" {
		r.failing++
	}
	r.state[key] = msg
	r.settle(r.since.IsZero())
}

// settle sets up from the count of failing connections, moving since when
// up changes (or when first is set).
func (r *Reachability) settle(first bool) {
	up := r.failing == 0
	if up != r.up || first {
		r.up, r.since = up, time.Now()
	}
}

// Health implements HealthReporter.
func (r *Reachability) Health() Health {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == nil {
		return Health{Error: "not connected yet"}
	}
	h := Health{Up: r.up, Since: r.since}
	if r.failing == 0 {
		return h
	}
	for _, e := range r.state {
		if e != "" {
			h.Error = e
			break
		}
	}
	return h
}

// Forget drops the connection named key, as if never reported: a
// connection that no longer exists must not keep the source down.
func (r *Reachability) Forget(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old, ok := r.state[key]
	if !ok {
		return
	}
	if old != "" {
		r.failing--
	}
	delete(r.state, key)
	r.settle(false)
}
