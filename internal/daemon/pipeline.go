package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/drain"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/httpapi"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/dyups"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/reload"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/splits"
	"github.com/swallowkeeper/swallowkeeper/internal/store"
)

// OneShot builds the pipeline of a one-shot command (render, once): the
// engine over the configuration's source, store and sinks, with no
// metrics and the targets' one-shot options. srcLog, when not nil, is the
// source's logger instead of log. readOnly (render) opens the store to
// read only: a daemon may be writing it meanwhile (store.OpenToRead).
func OneShot(cfg *config.Config, log, srcLog *slog.Logger, readOnly bool) (*engine.Engine, error) {
	mode := runOnce
	if readOnly {
		mode = runRender
	}
	g, err := build(cfg, log, srcLog, nil, dyups.NewMetrics(nil), mode, nil)
	if err != nil {
		return nil, err
	}
	return g.engine, nil
}

// generation is the pipeline built for one configuration: Run builds a
// new one on each reload, keeping what did not change (see build).
type generation struct {
	engine  *engine.Engine
	sources []httpapi.Source
	src     engine.Source
	srcKey  any // what src was built from
	targets []keyedTarget
	kept    []string // what was taken over from the previous generation
	staged  *stagedRegisterer
	splits  *splits.Sink // nil without dyups targets
}

// keyedTarget is a target with what it was built from.
type keyedTarget struct {
	key any
	t   *dyups.Target
}

// withReload builds the store, with its verify commands, and in reload
// mode adds the reload sink. Every version of the file is verified before
// anything is pushed: by the verify command, then in reload mode by
// reload.test (nginx -t), which the store runs as it writes the file; the
// reload sink only reloads.
func withReload(cfg *config.Config, log *slog.Logger, staged prometheus.Registerer, sinks []engine.Sink, readOnly bool) (store.Persisted, []engine.Sink, error) {
	var verify store.Verifiers
	for _, argv := range VerifyCommands(cfg) {
		verify = append(verify, store.Command{Argv: argv})
	}
	if cfg.Reload.Enabled {
		rs, err := reload.New(reload.Options{Command: cfg.Reload.Command}, log, staged)
		if err != nil {
			return nil, nil, err
		}
		sinks = append(sinks, rs)
	}
	file := store.Open(cfg.File)
	if readOnly {
		file = store.OpenToRead(cfg.File)
	}
	if len(verify) > 0 {
		file.SetVerifier(verify)
	}
	return file, sinks, nil
}

// VerifyCommands are the commands that check every version of the file
// before anything is pushed, in order: the verify command, then in reload
// mode reload.test (nginx -t) unless it is the same.
func VerifyCommands(cfg *config.Config) [][]string {
	var out [][]string
	if len(cfg.Verify) > 0 {
		out = append(out, cfg.Verify)
	}
	if cfg.Reload.Enabled && len(cfg.Reload.Test) > 0 && !slices.Equal(cfg.Reload.Test, cfg.Verify) {
		out = append(out, cfg.Reload.Test)
	}
	return out
}

// build wires a configuration: its source, the store and the sinks, under
// the engine. It is the one place that knows the kinds of sink.
//
// srcLog, when not nil, is the source's logger instead of log. dm holds
// the dyups metrics (kept for the daemon's life). prev, when not nil, is
// the running generation: its source is kept when the source's
// configuration did not change, and each of its targets whose URL,
// options and secret did not change is kept with what it acknowledged, so
// that the new engine pushes only what differs. Build starts nothing;
// the new source's and sinks' metrics are registered by commit.
// runMode is what build builds a pipeline for.
type runMode int

const (
	runDaemon runMode = iota
	runOnce           // one full sync, then exit
	runRender         // plan only: nothing written, nothing pushed
)

func build(cfg *config.Config, log, srcLog *slog.Logger, reg *prometheus.Registry, dm *dyups.Metrics, mode runMode, prev *generation) (*generation, error) {
	oneShot := mode != runDaemon
	if srcLog == nil {
		srcLog = log
	}
	g := &generation{staged: &stagedRegisterer{}}
	var staged prometheus.Registerer // nil: no metrics (one-shot commands)
	if reg != nil {
		staged = g.staged
	}
	rules := cfg.Rules()
	g.srcKey = struct {
		Source    any
		Consul    config.Consul
		Etcd      any
		ZooKeeper any
		Rules     registry.Rules
	}{cfg.Source, cfg.Consul, cfg.Etcd, cfg.ZooKeeper, rules}
	if prev != nil && reflect.DeepEqual(prev.srcKey, g.srcKey) {
		g.src = prev.src
		g.kept = append(g.kept, "source")
	} else {
		src, err := newSource(cfg, rules, srcLog, staged)
		if err != nil {
			return nil, err
		}
		g.src = src
	}
	var sinks []engine.Sink
	var secrets []config.Secret // one read per build, for the dyups and split sinks alike
	taken := map[int]bool{}     // prev's targets kept
	for i, tc := range cfg.Targets {
		opt := cfg.TargetOptions(i, oneShot)
		secret, err := cfg.TargetSecret(i) // read at start (and on SIGHUP); never logged
		if err != nil {
			return nil, err
		}
		secrets = append(secrets, secret)
		key := struct {
			URL    string
			Opt    dyups.Options
			Secret config.Secret
		}{tc.URL, opt, secret}
		t := (*dyups.Target)(nil)
		if prev != nil {
			for j, old := range prev.targets {
				if !taken[j] && reflect.DeepEqual(old.key, key) {
					t, taken[j] = old.t, true // a target runs under one engine
					g.kept = append(g.kept, "target "+t.URL())
					break
				}
			}
		}
		if t == nil {
			t, err = dyups.NewTarget(tc.URL, opt, log, dm)
			if err != nil {
				return nil, err
			}
			if secret != "" {
				t.UseSecret(secret.Reveal())
			}
		}
		g.targets = append(g.targets, keyedTarget{key, t})
		sinks = append(sinks, t)
	}
	var prevSplits *splits.Sink
	if prev != nil {
		prevSplits = prev.splits
	}
	ss, err := splitSink(cfg, secrets, oneShot, log, prevSplits)
	if err != nil {
		return nil, err
	}
	if ss != nil {
		g.splits = ss
		sinks = append(sinks, ss)
	}
	file, sinks, err := withReload(cfg, log, staged, sinks, mode == runRender)
	if err != nil {
		return nil, err
	}
	w := cfg.SettleWait()
	var ereg prometheus.Registerer // the engine takes over its predecessor's collectors
	if reg != nil {
		ereg = reg
	}
	g.engine = engine.New([]engine.Source{g.src}, file, sinks,
		engine.Guards{
			MinServices:  cfg.Guards.MinServices,
			MaxDrop:      cfg.Guards.MaxDrop,
			MaxTotalDrop: cfg.Guards.MaxTotalDrop,
			ConfirmAfter: time.Duration(cfg.Guards.ConfirmAfter),
			Reserved:     cfg.Upstreams.Reserved,
			Addresses:    cfg.Upstreams.AddressPolicy(),
		},
		engine.Wait{Min: time.Duration(w.Min), Max: time.Duration(w.Max)},
		log, ereg)
	g.engine.UseDrains(&drain.File{Path: drain.PathFor(cfg.File)}) // swallowkeeper drain's marks
	g.sources = []httpapi.Source{{Name: SourceName(cfg), Source: g.src}}
	return g, nil
}

// stagedRegisterer holds a new generation's collectors until commit, so
// that a build that fails leaves the running generation's metrics alone.
type stagedRegisterer struct{ cs []prometheus.Collector }

func (s *stagedRegisterer) Register(c prometheus.Collector) error {
	s.cs = append(s.cs, c)
	return nil
}
func (s *stagedRegisterer) MustRegister(cs ...prometheus.Collector) { s.cs = append(s.cs, cs...) }
func (s *stagedRegisterer) Unregister(prometheus.Collector) bool    { return false }

// commit registers the generation's new collectors in reg, each in place
// of its predecessor (a rebuilt source or reload sink starts its counters
// again; kept components and the engine's go on).
func (g *generation) commit(reg *prometheus.Registry) error {
	for _, c := range g.staged.cs {
		err := reg.Register(c)
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			reg.Unregister(are.ExistingCollector)
			err = reg.Register(c)
		}
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	g.staged.cs = nil
	// Only now, when this generation replaces the running one: a reload
	// that fails after build must leave the kept targets waking the
	// running split sink.
	wake := func() {}
	if g.splits != nil {
		wake = g.splits.Wake // nginx lost its split rules with its upstreams
	}
	for _, kt := range g.targets {
		kt.t.OnRepush(wake)
	}
	return nil
}
