// Package daemon is swallowkeeper's long-lived process: it builds the
// pipeline a configuration describes (the source, the store and the sinks,
// under the engine), serves the HTTP listener, and on each reload request
// (SIGHUP) applies the configuration assembled again in place, keeping
// what did not change. Package cli parses the flags and calls Run, or
// OneShot for the one-shot commands.
package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/httpapi"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/dyups"
	"github.com/swallowkeeper/swallowkeeper/internal/store"
)

// Options are what the daemon needs besides the configuration.
type Options struct {
	// Reload assembles the configuration again (file and environment
	// re-read) for a reload request.
	Reload func() (*config.Config, error)
	// HUP delivers the reload requests (the command line relays SIGHUP);
	// nil: none.
	HUP <-chan os.Signal
	// Log receives the daemon's log, in the configuration's format.
	Log io.Writer
	// Version and Revision name the build, for the log, /status and the
	// swallowkeeper_build_info metric.
	Version, Revision string
}

// Run runs the pipeline for cfg until ctx ends, and returns once the
// sinks have stopped. On each reload request it assembles the
// configuration again: one that does not validate or build is reported
// and the running one kept, a good one replaces it in place. The listener
// and the metrics registry live as long as the daemon (probes keep
// answering, counters go on; a new metrics.listen address moves the
// listener), and the new pipeline keeps the source and each target whose
// configuration did not change: a kept target remembers what nginx
// acknowledged and pushes only the upstreams whose rendering changed.
func Run(ctx context.Context, cfg *config.Config, o Options) error {
	level := new(slog.LevelVar)
	log := newLevelLogger(o.Log, cfg, level)
	lock, err := LockStore(cfg.File, log)
	if err != nil {
		return err
	}
	defer func() { lock.Release() }() // the lock held at the end
	log.Info("swallowkeeper started", "version", o.Version, "source", SourceName(cfg), "file", cfg.File, "targets", len(cfg.Targets))

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo(o.Version, o.Revision))
	dm := dyups.NewMetrics(reg)
	gen, err := build(cfg, log, nil, reg, dm, runDaemon, nil)
	if err != nil {
		return err
	}
	if err := gen.commit(reg); err != nil {
		return err
	}
	var handler atomic.Pointer[http.Handler]
	setHandler := func(cfg *config.Config, g *generation) {
		h := httpapi.Handler(&httpapi.Daemon{Version: o.Version, File: cfg.File, Engine: g.engine, Sources: g.sources, Metrics: reg,
			Pprof: cfg.Metrics.Pprof, AllowedHosts: cfg.Metrics.AllowedHosts})
		handler.Store(&h)
	}
	setHandler(cfg, gen)
	lis := &listener{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*handler.Load()).ServeHTTP(w, r) })}
	defer lis.close()
	if err := lis.move(ctx, cfg.Metrics.Listen, cfg.Metrics.Pprof, log); err != nil {
		return err
	}
	for {
		genCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- gen.engine.Run(genCtx) }() // returns once the sinks have stopped
	wait:
		select {
		case err := <-done:
			cancel()
			if err == nil && ctx.Err() != nil {
				log.Info("swallowkeeper stopped")
			}
			return err
		case <-o.HUP:
			next, err := o.Reload()
			if err != nil {
				log.Error("configuration reload failed; keeping the running configuration", "err", err)
				goto wait
			}
			// A new file or directory is locked before anything is built
			// on it; the old one is let go once the new pipeline runs.
			var nextLock *store.Lock
			moved := !lock.Covers(next.File) && store.LockPath(next.File) != store.LockPath(cfg.File)
			if moved || lock == nil {
				if nextLock, err = LockStore(next.File, log); err != nil {
					log.Error("configuration reload failed; keeping the running configuration", "err", err)
					goto wait
				}
			}
			ngen, err := build(next, log, nil, reg, dm, runDaemon, gen)
			if err != nil {
				nextLock.Release()
				log.Error("configuration reload failed; keeping the running configuration", "err", err)
				goto wait
			}
			if err := lis.move(ctx, next.Metrics.Listen, next.Metrics.Pprof, log); err != nil {
				nextLock.Release()
				log.Error("configuration reload failed; keeping the running configuration", "err", err)
				goto wait
			}
			if next.Log.Format != cfg.Log.Format {
				log.Warn("log.format changes at the next start only", "running", cfg.Log.Format, "configured", next.Log.Format)
			}
			log.Info("configuration reloaded; applying it in place", "kept", ngen.kept)
			cancel()
			if err := <-done; err != nil {
				nextLock.Release()
				return err
			}
			if moved || nextLock != nil {
				lock.Release()
				lock = nextLock
				log.Info("the persisted file's lock moved with it", "file", next.File, "locked", lock != nil)
			}
			ngen.engine.Resume(gen.engine)
			if err := ngen.commit(reg); err != nil {
				return err
			}
			l, _ := config.ParseLevel(next.Log.Level) // validated
			level.Set(l)
			setHandler(next, ngen)
			cfg, gen = next, ngen
		}
	}
}

// LockStore takes the lock of the persisted path p (store.Acquire), so
// that no second daemon or `once` writes it meanwhile. Another writer
// holding it is an error: starting anyway would have two writers
// overwrite each other's versions; so is a lock file that is a symbolic
// link. Where no lock can be taken at all (store.ErrNoLocks: a
// filesystem without flock, a directory this user cannot write) it is
// logged and the writer goes on without it, as before locks existed: the
// store's own writes then report what is wrong with the place. The
// *store.Lock may be nil; Release and Covers take nil.
func LockStore(p string, log *slog.Logger) (*store.Lock, error) {
	l, err := store.Acquire(p)
	if errors.Is(err, store.ErrNoLocks) {
		log.Warn("cannot lock the persisted file; going on without the lock", "file", p, "err", err)
		return nil, nil
	}
	return l, err
}

// newLevelLogger is the daemon's logger, with a level that a reload can
// change.
func newLevelLogger(w io.Writer, cfg *config.Config, level *slog.LevelVar) *slog.Logger {
	l, _ := config.ParseLevel(cfg.Log.Level) // validated
	level.Set(l)
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// buildInfo is the swallowkeeper_build_info metric: always 1, with the
// version and revision as labels, so that dashboards can tell which build
// runs where.
func buildInfo(version, revision string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "swallowkeeper_build_info",
		Help:        "Always 1; the labels say which build runs.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision},
	})
	g.Set(1)
	return g
}
