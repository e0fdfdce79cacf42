package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Request is one request of the load generator.
type Request struct {
	Sched    time.Time // when it was due: latency counts from here (open loop)
	End      time.Time
	Post     bool
	Status   int
	Backend  string // the instance id the backend answered
	Upstream string // nginx's $upstream_addr: every server tried, in order
	Err      string
}

// Failed reports whether the request did not get a 200 from a backend.
func (r Request) Failed() bool { return r.Err != "" || r.Status != http.StatusOK || r.Backend == "" }

// Latency is the time from when the request was due to its end.
func (r Request) Latency() time.Duration { return r.End.Sub(r.Sched) }

// Stats summarises the requests due in [from, to).
func Stats(reqs []Request, from, to time.Time) LoadStats {
	var s LoadStats
	var lat []float64
	errs := map[string]int{}
	ok := 0
	for _, r := range reqs {
		if r.Sched.Before(from) || !r.Sched.Before(to) {
			continue
		}
		s.Requests++
		lat = append(lat, ms(r.Latency()))
		if !r.Failed() {
			ok++
			continue
		}
		s.Failed++
		if r.Post {
			s.FailedPOST++
		} else {
			s.FailedGET++
		}
		errs[r.describe()]++
	}
	s.Seconds = to.Sub(from).Seconds()
	if s.Seconds > 0 {
		s.OKPerSec = float64(ok) / s.Seconds
	}
	s.Latency = Summarize(lat)
	s.Errors = topErrors(errs, 5)
	return s
}

// Merge pools the stats of several runs (latency percentiles need the
// requests themselves: pass them as lat).
func Merge(parts []LoadStats, lat []float64) LoadStats {
	var s LoadStats
	var ok float64
	errs := map[string]int{}
	for _, p := range parts {
		s.Requests += p.Requests
		s.Failed += p.Failed
		s.FailedGET += p.FailedGET
		s.FailedPOST += p.FailedPOST
		s.Seconds += p.Seconds
		ok += p.OKPerSec * p.Seconds
		for _, e := range p.Errors {
			what, n := splitCount(e)
			errs[what] += n
		}
	}
	if s.Seconds > 0 {
		s.OKPerSec = ok / s.Seconds
	}
	s.Latency = Summarize(lat)
	s.Errors = topErrors(errs, 5)
	return s
}

// Latencies returns the latencies (ms) of the requests due in [from, to).
func Latencies(reqs []Request, from, to time.Time) []float64 {
	var lat []float64
	for _, r := range reqs {
		if !r.Sched.Before(from) && r.Sched.Before(to) {
			lat = append(lat, ms(r.Latency()))
		}
	}
	return lat
}

// SplitByEvents returns the latencies of the requests due in [from, to),
// split by whether each was due within window after one of events (sorted,
// oldest first): where a phase's tail sits relative to the registry
// changes made during it.
func SplitByEvents(reqs []Request, from, to time.Time, events []time.Time, window time.Duration) (near, away []float64) {
	for _, r := range reqs {
		if r.Sched.Before(from) || !r.Sched.Before(to) {
			continue
		}
		// The last event at or before the request was due.
		k := sort.Search(len(events), func(i int) bool { return events[i].After(r.Sched) }) - 1
		if k >= 0 && r.Sched.Sub(events[k]) < window {
			near = append(near, ms(r.Latency()))
		} else {
			away = append(away, ms(r.Latency()))
		}
	}
	return near, away
}

// splitCount undoes topErrors' "what (×n)".
func splitCount(e string) (string, int) {
	i := strings.LastIndex(e, " (×")
	if i < 0 || !strings.HasSuffix(e, ")") {
		return e, 1
	}
	n, err := strconv.Atoi(e[i+len(" (×") : len(e)-1])
	if err != nil {
		return e, 1
	}
	return e[:i], n
}

func (r Request) describe() string {
	m := "GET"
	if r.Post {
		m = "POST"
	}
	switch {
	case r.Err != "":
		return m + ": " + r.Err
	case r.Status != http.StatusOK:
		return fmt.Sprintf("%s: status %d", m, r.Status)
	default:
		return m + ": answer from no known backend"
	}
}

func topErrors(errs map[string]int, n int) []string {
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if errs[a] != errs[b] {
			return errs[b] - errs[a]
		}
		return strings.Compare(a, b)
	})
	var out []string
	for _, k := range keys[:min(n, len(keys))] {
		out = append(out, fmt.Sprintf("%s (×%d)", k, errs[k]))
	}
	return out
}

// postBody is what every POST sends; nginx does not retry a POST once it
// has been sent to a backend, so a backend that goes away under one shows.
const postBody = `{"order": 42, "items": ["a", "b", "c"], "note": "swallowkeeper bench"}`

// Load sends requests through nginx at a fixed rate (open loop: a slow
// answer does not delay the next request) over keep-alive connections,
// and records every one.
type Load struct {
	url, host string
	rate      int
	postEvery int
	client    *http.Client
	Start     time.Time

	mu   sync.Mutex
	reqs []Request

	inflight atomic.Int64
	cancel   context.CancelFunc
	done     chan struct{}
	wg       sync.WaitGroup
}

// maxInFlight bounds the generator; a request that would exceed it is
// recorded as failed.
const maxInFlight = 8000

// StartLoad starts sending rate requests/s to url with the given Host;
// every postEvery-th is a POST with a body (0: none).
func StartLoad(url, host string, rate, postEvery int) *Load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{
		url: url, host: host, rate: rate, postEvery: postEvery,
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			MaxIdleConns: 2048, MaxIdleConnsPerHost: 2048, IdleConnTimeout: 90 * time.Second,
			DisableCompression: true,
		}},
		cancel: cancel, done: make(chan struct{}),
	}
	l.Start = time.Now()
	go l.run(ctx)
	return l
}

func (l *Load) run(ctx context.Context) {
	defer close(l.done)
	interval := time.Second / time.Duration(max(l.rate, 1))
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := 0; ; i++ {
		due := l.Start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return
		}
		post := l.postEvery > 0 && i%l.postEvery == l.postEvery-1
		if l.inflight.Load() >= maxInFlight {
			l.record(Request{Sched: due, End: time.Now(), Post: post, Err: "load generator: too many requests in flight"})
			continue
		}
		l.inflight.Add(1)
		l.wg.Go(func() {
			defer l.inflight.Add(-1)
			l.record(l.do(due, post))
		})
	}
}

func (l *Load) do(due time.Time, post bool) Request {
	r := Request{Sched: due, Post: post}
	method := http.MethodGet
	var body io.Reader
	if post {
		method = http.MethodPost
		body = strings.NewReader(postBody)
	}
	req, _ := http.NewRequest(method, l.url, body)
	req.Host = l.host
	resp, err := l.client.Do(req)
	if err != nil {
		r.End = time.Now()
		r.Err = shortErr(err)
		return r
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	r.End = time.Now()
	r.Status = resp.StatusCode
	r.Upstream = resp.Header.Get("X-SK-Upstream-Addr")
	if err != nil {
		r.Err = shortErr(err)
	} else if resp.StatusCode == http.StatusOK && strings.HasPrefix(string(b), backendPrefix) {
		r.Backend = string(b)
	}
	return r
}

func (l *Load) record(r Request) {
	l.mu.Lock()
	l.reqs = append(l.reqs, r)
	l.mu.Unlock()
}

// Stop stops sending, waits for the requests in flight and returns every
// request, in the order they ended. Called again, it returns the same.
func (l *Load) Stop() []Request {
	l.cancel()
	<-l.done
	l.wg.Wait()
	l.client.CloseIdleConnections()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reqs
}

// shortErr drops the URL from a client error, so that errors of the same
// kind read the same.
func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.Contains(s, "http://") {
		return s[i+2:]
	}
	return s
}

// Prober sends GETs in a tight loop from several goroutines, each on a
// fresh connection, so that every nginx worker is probed continuously.
type Prober struct {
	mu     sync.Mutex
	probes []Probe
	total  atomic.Int64
	errors atomic.Int64
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// StartProber starts n probing goroutines against url with the Host host.
func StartProber(url, host string, n int) *Prober {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Prober{cancel: cancel}
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for range n {
		p.wg.Go(func() {
			for ctx.Err() == nil {
				start := time.Now()
				pr := Probe{Start: start}
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				req.Host = host
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					pr.Err = true
				} else {
					b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						pr.Err = true
					}
					pr.Backend = string(b)
				}
				p.total.Add(1)
				if pr.Err {
					p.errors.Add(1)
					// A failing nginx answers fast: do not spin.
					time.Sleep(time.Millisecond)
				}
				p.mu.Lock()
				p.probes = append(p.probes, pr)
				p.mu.Unlock()
			}
		})
	}
	return p
}

// Reset forgets the probes so far.
func (p *Prober) Reset() {
	p.mu.Lock()
	p.probes = p.probes[:0]
	p.mu.Unlock()
}

// Probes returns a copy of the probes since the last Reset.
func (p *Prober) Probes() []Probe {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.probes)
}

// Stop ends the probing and returns how many probes were sent and failed.
func (p *Prober) Stop() (total, errors int) {
	p.cancel()
	p.wg.Wait()
	return int(p.total.Load()), int(p.errors.Load())
}
