package consul

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/hashicorp/consul/api"
)

// readService reads /v1/health/service/<name> (a long poll when q has a
// WaitIndex) as the api package's Health().Service(name, "", false, q)
// would, and decodes the answer only when decode, given the answer's meta,
// says to: an answer of the streaming backend is only a cue to read again
// (see follow), and decoding it would be wasted.
//
// It reads the answer uncompressed, into a pooled buffer, and decodes only
// the fields the source uses (decodeServiceEntries). Per change this was the
// largest part of the source's CPU: the api package asks for gzip and
// decodes every field of every entry and check (check outputs, proxy and
// connect blocks, definitions), twice per change in per_service mode.
//
// The entries are those of service name alone (OnlyService), with their
// versions (versionsOf), what every caller compares before it builds.
// deep runs the decoding (see deepPool; inline runs it on the caller's
// goroutine).
func (c *Client) readService(ctx context.Context, name string, q *api.QueryOptions, decode func(*api.QueryMeta) bool, deep runner) ([]*api.ServiceEntry, serviceVersion, *api.QueryMeta, error) {
	// getRaw's URL escapes the path: the name goes in as it is.
	body, meta, err := c.getRaw(ctx, "/v1/health/service/"+name, q, takeAnswerBuffer)
	if err != nil {
		return nil, serviceVersion{}, nil, err
	}
	defer giveAnswerBuffer(body)
	if !decode(meta) {
		return nil, serviceVersion{}, meta, nil
	}
	var (
		entries  []*api.ServiceEntry
		versions serviceVersion
	)
	if !deep(ctx, func() {
		if entries, err = decodeServiceEntries(body); err == nil {
			entries = OnlyService(entries, name)
			versions = versionsOf(entries)
		}
	}) {
		return nil, serviceVersion{}, nil, ctx.Err()
	}
	if err != nil {
		return nil, serviceVersion{}, nil, fmt.Errorf("decode /v1/health/service/%s: %w", name, err)
	}
	return entries, versions, meta, nil
}

// always is readService's decode for a read whose answer is always used.
func always(*api.QueryMeta) bool { return true }

// A runner runs f and waits for it; it reports false, without running f,
// when ctx ended first.
type runner func(ctx context.Context, f func()) bool

// inline is the runner that runs f on the caller's goroutine.
func inline(_ context.Context, f func()) bool { f(); return true }

// deepPool runs, for the per-service followers, the work that needs a
// deep stack (decoding an answer, building a service's upstreams) on a few
// goroutines of its own. A goroutine keeps a stack as large as its deepest
// call needed, and the garbage collector halves it only while the
// goroutine uses less than a quarter of it: a follower that decoded its own
// answers kept the stack the decoding grew through every long poll (and
// Go starts new goroutines, the HTTP/2 transport's one per request among
// them, at the average stack size). At 1,000 services the daemon's 2,026
// goroutines held 20.4 MB of stacks; 12.5 MB with the pool.
type deepPool struct {
	ctx  context.Context // the workers'
	jobs chan func()
	wg   sync.WaitGroup
}

// newDeepPool starts n workers; they end with ctx (stop waits for them).
func newDeepPool(ctx context.Context, n int) *deepPool {
	p := &deepPool{ctx: ctx, jobs: make(chan func())}
	for range n {
		p.wg.Go(func() {
			for {
				select {
				case f := <-p.jobs:
					f()
				case <-ctx.Done():
					return
				}
			}
		})
	}
	return p
}

// run is the pool's runner. A job taken by a worker always runs to the
// end, so run returns only once f has run, or never started (ctx or the
// pool's own ended first).
func (p *deepPool) run(ctx context.Context, f func()) bool {
	if ctx.Err() != nil || p.ctx.Err() != nil {
		return false // not left to select's random pick between ready cases
	}
	done := make(chan struct{})
	select {
	case p.jobs <- func() { defer close(done); f() }:
	case <-ctx.Done():
		return false
	case <-p.ctx.Done():
		return false
	}
	<-done
	return true
}

// stop waits for the workers, once the pool's ctx has ended.
func (p *deepPool) stop() { p.wg.Wait() }

// answerBuffers hold the bodies of service answers between reads: decoding
// copies what it keeps, so a body is garbage once decoded. Only buffers up
// to maxPooledAnswer go back, so that one huge service does not pin its
// buffer for ever.
var answerBuffers = sync.Pool{New: func() any { return new([]byte) }}

const maxPooledAnswer = 1 << 20

func takeAnswerBuffer() []byte { return (*answerBuffers.Get().(*[]byte))[:0] }

func giveAnswerBuffer(b []byte) {
	if cap(b) == 0 || cap(b) > maxPooledAnswer {
		return
	}
	b = b[:0]
	answerBuffers.Put(&b)
}

// The fields of a /v1/health/service answer the source uses (Convert,
// versionsOf, OnlyService), under the api package's names, so that JSON
// decodes them as it would into api.ServiceEntry; every other field is
// skipped rather than allocated.
type (
	leanEntry struct {
		Node    *leanNode
		Service *leanService
		Checks  []*leanCheck
	}
	leanNode struct {
		Node            string
		Address         string
		TaggedAddresses map[string]string
		ModifyIndex     uint64
	}
	leanService struct {
		ID              string
		Service         string
		Address         string
		Port            int
		Tags            []string
		Meta            map[string]string
		TaggedAddresses map[string]api.ServiceAddress
		Weights         api.AgentWeights
		ModifyIndex     uint64
	}
	leanCheck struct {
		Status      string
		ModifyIndex uint64
	}
)

// decodeServiceEntries decodes a /v1/health/service answer into the api
// package's types, filling only the fields the source uses. A field the
// source uses decodes, or fails, as it would into api.ServiceEntry; a field
// it does not use is never looked at, so a malformed one there does not
// hold the service's changes.
func decodeServiceEntries(body []byte) ([]*api.ServiceEntry, error) {
	var lean []*leanEntry
	// A Decoder, as the api package reads it: what follows the list (no
	// Consul sends anything) is ignored there, and so here.
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&lean); err != nil {
		return nil, err
	}
	if lean == nil {
		return nil, nil
	}
	out := make([]*api.ServiceEntry, len(lean))
	for i, l := range lean {
		if l == nil {
			continue
		}
		e := &api.ServiceEntry{}
		if n := l.Node; n != nil {
			e.Node = &api.Node{Node: n.Node, Address: n.Address, TaggedAddresses: n.TaggedAddresses, ModifyIndex: n.ModifyIndex}
		}
		if s := l.Service; s != nil {
			e.Service = &api.AgentService{ID: s.ID, Service: s.Service, Address: s.Address, Port: s.Port, Tags: s.Tags,
				Meta: s.Meta, TaggedAddresses: s.TaggedAddresses, Weights: s.Weights, ModifyIndex: s.ModifyIndex}
		}
		if l.Checks != nil {
			// One allocation for the entry's checks, not one each.
			checks := make([]api.HealthCheck, len(l.Checks))
			e.Checks = make(api.HealthChecks, len(l.Checks))
			for j, c := range l.Checks {
				if c == nil {
					continue
				}
				checks[j] = api.HealthCheck{Status: c.Status, ModifyIndex: c.ModifyIndex}
				e.Checks[j] = &checks[j]
			}
		}
		out[i] = e
	}
	return out, nil
}
