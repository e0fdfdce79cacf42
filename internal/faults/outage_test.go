package faults

import (
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// The Consul source's retry backoff (internal/source/consul New defaults,
// internal/backoff): doubling from retryBase, capped at retryCap, each
// delay drawn from [d/2, d].
const (
	retryBase = 250 * time.Millisecond
	retryCap  = 30 * time.Second
	// consulWatches is the number of watch loops (catalog/services and
	// health/state/any) that retry independently during an outage.
	consulWatches = 2
)

// nominalDelay is the backoff's delay before jitter for the n-th retry
// (n from 1).
func nominalDelay(n int) time.Duration {
	d := retryBase
	for i := 1; i < n && d < retryCap; i++ {
		d *= 2
	}
	return min(d, retryCap)
}

// watchErrorsIn is the number of failed requests one watch loop makes in
// an outage of length d when every delay is short (lo: the shortest the
// jitter allows, d/2) or long (the nominal delay): the first failure comes
// at once, then one after each delay.
func watchErrorsIn(d time.Duration, short bool) int {
	n, elapsed := 1, time.Duration(0)
	for {
		next := nominalDelay(n)
		if short {
			next /= 2
		}
		elapsed += next
		if elapsed > d {
			return n
		}
		n++
	}
}

// retryLine matches the Consul source's log line for a failed watch.
var retryLine = regexp.MustCompile(`msg="watch failed; retrying".* watch=(\S+) .*retry_in=(\S+) attempt=(\d+)`)

// TestConsulOutageChangesNothing: Consul dies (SIGKILL) for a minute while
// traffic flows through nginx. Not one request fails, nginx's upstreams do
// not change, the daemon keeps running and retries with jittered, capped
// backoff; when Consul is back a change reaches the traffic again.
func TestConsulOutageChangesNothing(t *testing.T) {
	outage := envDuration(t, "SK_OUTAGE", 60*time.Second)
	c := testenv.StartConsul(t)
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	ng := testenv.StartNginx(t, testenv.NginxOptions{PersistedFile: file})
	metrics := testenv.Addr(testenv.FreePort(t))
	cfg := writeConfig(t, daemonConfig{Consul: c.HTTPAddr(), File: file, Target: ng.APIURL(), Metrics: metrics})
	bs := []*backend{startBackend(t, "web-1"), startBackend(t, "web-2"), startBackend(t, "web-3")}
	for _, b := range bs {
		c.Register(t, "web", b.ID, "127.0.0.1", b.Port, nil, nil)
	}
	d := startDaemon(t, cfg, metrics)
	waitRoutes(t, ng, d, "web", 20*time.Second, "web-1", "web-2", "web-3")

	l := startLoad(ng, "web", 100, 4)
	time.Sleep(2 * time.Second)
	before := d.scrape(t)
	detailBefore, err := detail(ng)
	if err != nil {
		t.Fatal(err)
	}
	nginxBefore := nginxMutations(ng)
	logMark := len(d.log.String())

	c.Stop(t)
	stopped := time.Now()
	detailChanges, detailReads := 0, 0
	for time.Since(stopped) < outage {
		if !d.running() {
			t.Fatalf("daemon exited during the Consul outage (%v); log:\n%s", d.cmd.ProcessState, d.log.String())
		}
		now, err := detail(ng)
		if err != nil {
			t.Fatalf("nginx API during the outage: %v", err)
		}
		detailReads++
		if now != detailBefore {
			detailChanges++
			t.Errorf("nginx's upstreams changed during the Consul outage:\n%s\nwas:\n%s", now, detailBefore)
			detailBefore = now
		}
		time.Sleep(250 * time.Millisecond)
	}
	after := d.scrape(t)
	down := time.Since(stopped)
	sentDuring := l.sent()

	pushes := after.pushes() - before.pushes()
	logged := nginxMutations(ng) - nginxBefore
	errs := after.sum("swallowkeeper_consul_errors_total") - before.sum("swallowkeeper_consul_errors_total")
	most := consulWatches*watchErrorsIn(down, true) + 1 // +1: a service read in flight at the kill
	least := consulWatches * (watchErrorsIn(down, false) - 1)
	figure(t, "Consul down %v: %d reads of nginx /detail, %d changes; daemon pushes (POST+DELETE) %v; nginx logged %d upstream changes",
		down.Round(time.Second), detailReads, detailChanges, pushes, logged)
	figure(t, "Consul errors counted by the daemon over %v: %v (allowed %d..%d by backoff %v..%v with jitter, %d watches)",
		down.Round(time.Second), errs, least, most, retryBase, retryCap, consulWatches)
	if pushes != 0 || logged != 0 {
		t.Errorf("nginx was changed during the outage: %v pushes, %d changes logged by nginx", pushes, logged)
	}
	if errs > float64(most) {
		t.Errorf("%v Consul errors in %v: retries are not capped (at most %d expected)", errs, down, most)
	}
	if errs < float64(least) {
		t.Errorf("%v Consul errors in %v: the daemon stopped retrying (at least %d expected)", errs, down, least)
	}

	// Every retry delay is within [d/2, d] of its nominal value, none above
	// the cap, and they are jittered: not all equal to the nominal value.
	var delays []string
	jittered, checked := 0, 0
	for _, m := range retryLine.FindAllStringSubmatch(d.log.String()[logMark:], -1) {
		got, err1 := time.ParseDuration(m[2])
		n, err2 := strconv.Atoi(m[3])
		if err1 != nil || err2 != nil {
			t.Errorf("cannot read retry line %q", m[0])
			continue
		}
		checked++
		nominal := nominalDelay(n)
		if got < nominal/2 || got > nominal || got > retryCap {
			t.Errorf("watch %s retry %d waited %v, want within [%v, %v]", m[1], n, got, nominal/2, nominal)
		}
		if nominal-got > time.Millisecond {
			jittered++
		}
		if m[1] == "catalog/services" {
			delays = append(delays, got.Round(10*time.Millisecond).String())
		}
	}
	figure(t, "retry delays of the catalog watch: %s; %d of %d delays jittered below nominal", strings.Join(delays, " "), jittered, checked)
	if checked == 0 {
		t.Errorf("no retry logged during the outage; log:\n%s", d.log.String()[logMark:])
	} else if jittered == 0 {
		t.Errorf("none of %d retry delays is jittered", checked)
	}

	// Consul comes back; a change made then reaches the traffic.
	restart := time.Now()
	c.Start(t)
	back := time.Now()
	// The agent restores its TTL checks critical: the apps' next heartbeats
	// set them passing again. Meanwhile the daemon holds the upstream
	// (never empty); then web-3 leaves.
	c.SetHealth(t, "web-1", "passing")
	c.SetHealth(t, "web-2", "passing")
	c.Deregister(t, "web-3")
	waitRoutes(t, ng, d, "web", retryCap+15*time.Second, "web-1", "web-2")
	catchUp := time.Since(back)
	recs := l.finish()
	failed := failures(recs)
	figure(t, "Consul restart took %v; change made when it was back reached nginx traffic %v later (target 2s; retry cap %v)",
		back.Sub(restart).Round(time.Millisecond), catchUp.Round(time.Millisecond), retryCap)
	figure(t, "requests through nginx: %d sent (%d during the outage), %d failed", len(recs), sentDuring, len(failed))
	if len(failed) > 0 {
		t.Errorf("%d of %d requests failed; first: %s", len(failed), len(recs), failed[0].err)
	}
	if catchUp > catchUpBound {
		t.Errorf("the daemon caught up %v after Consul came back, want at most %v", catchUp, catchUpBound)
	}
	if !d.running() {
		t.Fatalf("daemon exited; log:\n%s", d.log.String())
	}
	d.stop(t) // and it still stops cleanly
}

// catchUpBound is how soon after Consul is back a change must reach nginx.
// A watch in backoff asks the agent every second whether it answers again
// and retries at once when it does, instead of sleeping out a backoff
// delay that grew to the retry cap during the outage.
const catchUpBound = 2 * time.Second
