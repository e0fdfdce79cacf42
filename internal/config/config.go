// Package config holds SwallowKeeper's configuration: defaults, a strict
// YAML decode, environment and flag overrides, and validation, in one
// place. Every error names the file, the line and the field at fault.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/secret"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/dyups"
	"github.com/swallowkeeper/swallowkeeper/internal/source/consul"
	"github.com/swallowkeeper/swallowkeeper/internal/split"
	"github.com/swallowkeeper/swallowkeeper/internal/store"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Config is the whole configuration. The yaml tags are the file's keys.
type Config struct {
	// Source is the registry to follow: consul (default), etcd or
	// zookeeper; its section says how to reach it.
	Source    string    `yaml:"source"`
	Consul    Consul    `yaml:"consul"`
	Etcd      Etcd      `yaml:"etcd"`
	ZooKeeper ZooKeeper `yaml:"zookeeper"`
	Services  Services  `yaml:"services"`
	Upstreams Upstreams `yaml:"upstreams"`
	// File is the upstream file that nginx includes; it is written first,
	// atomically, before anything is pushed to nginx.
	File string `yaml:"file"`
	// Verify, when set, is a command (no shell) that tests every version
	// of File the daemon writes before anything is pushed, e.g.
	// [nginx, -t, -q]: a refused file is replaced by the previous one and
	// the change retried. Empty: off.
	Verify    []string  `yaml:"verify"`
	Targets   []Target  `yaml:"targets"`
	Reconcile Reconcile `yaml:"reconcile"`
	Reload    Reload    `yaml:"reload"`
	Guards    Guards    `yaml:"guards"`
	Wait      Wait      `yaml:"wait"`
	Log       Log       `yaml:"log"`
	Metrics   Metrics   `yaml:"metrics"`

	// Where each field was set, for error messages: "targets[0].url" → line,
	// or "consul.address" → "$CONSUL_HTTP_ADDR".
	lines     map[string]int
	overrides map[string]string
	path      string
	// decodeErrs are the keys the file got wrong (type, unknown key):
	// Validate reports them with its own findings, so one run shows all.
	decodeErrs []fileError
}

// Consul is how to reach the registry.
type Consul struct {
	Address    string `yaml:"address"` // host:port, or a URL with scheme
	Scheme     string `yaml:"scheme"`  // http or https
	Datacenter string `yaml:"datacenter"`
	// TokenFile holds the ACL token. The token itself is never in this file:
	// it comes from CONSUL_HTTP_TOKEN or TokenFile, and never prints.
	TokenFile   string   `yaml:"token_file"`
	Token       Secret   `yaml:"-"`
	TLS         TLS      `yaml:"tls"`
	WaitTime    Duration `yaml:"wait_time"`
	Resync      Duration `yaml:"resync"`
	OnlyPassing bool     `yaml:"only_passing"`
	// AllowACLFiltered trusts answers Consul filtered by ACLs (a token
	// scoped on purpose); by default they change nothing.
	AllowACLFiltered bool `yaml:"allow_acl_filtered"`
	// Mode: services (the catalog and health checks) or kv (keys
	// <kv_prefix>/<upstream>/<ip>:<port> in nginx-upsync-module's layout).
	Mode     string `yaml:"mode"`
	KVPrefix string `yaml:"kv_prefix"`
	// Weights (services mode): meta (upstreams.weight_meta, else
	// upstreams.weight) or native (the service's Weights.Passing/Warning).
	Weights string `yaml:"weights"`
	// AddressFrom (services mode): a tagged address key (lan_ipv4, wan, ...)
	// to take the address from; empty: Service.Address, else Node.Address.
	AddressFrom string `yaml:"address_from"`
	// Watch (services mode): catalog (two datacenter-wide long polls) or
	// per_service (one long poll per service); see consul.WatchCatalog.
	Watch string `yaml:"watch"`
}

// Consul modes and weight sources.
const (
	ConsulModeServices  = "services"
	ConsulModeKV        = "kv"
	ConsulWeightsMeta   = "meta"
	ConsulWeightsNative = "native"
)

// TLS for the Consul connection.
type TLS struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Registries SwallowKeeper can follow.
const (
	SourceConsul    = "consul"
	SourceEtcd      = "etcd"
	SourceZooKeeper = "zookeeper"
)

// Etcd is how to reach an etcd cluster (v3 API) and how registrations are
// laid out in it.
type Etcd struct {
	Endpoints []string `yaml:"endpoints"` // host:port or http(s)://host:port
	// Layout: upsync (nginx-upsync-module's /upstreams/<upstream>/<ip>:<port>)
	// or service (<prefix>/<service>/<instance-id> with a JSON value).
	Layout string `yaml:"layout"`
	// Prefix defaults to /upstreams (upsync) or /services (service).
	Prefix       string   `yaml:"prefix"`
	Username     string   `yaml:"username"`
	PasswordFile string   `yaml:"password_file"` // the password never sits in this file
	TLS          FileTLS  `yaml:"tls"`
	DialTimeout  Duration `yaml:"dial_timeout"`
	Resync       Duration `yaml:"resync"`
}

// FileTLS is client TLS from files: a CA bundle, and a client certificate
// with its key.
type FileTLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// ZooKeeper is how to reach a ZooKeeper ensemble and how registrations are
// laid out in it.
type ZooKeeper struct {
	Servers []string `yaml:"servers"` // host:port
	// Layout: curator (Apache Curator / Spring Cloud Zookeeper JSON) or
	// plain (<root>/<service>/<ip>:<port>).
	Layout         string   `yaml:"layout"`
	Root           string   `yaml:"root"`
	SessionTimeout Duration `yaml:"session_timeout"`
	Resync         Duration `yaml:"resync"`
}

// Services selects what to follow.
type Services struct {
	Include     []string `yaml:"include"` // allow list; empty = all
	Exclude     []string `yaml:"exclude"`
	RequireTags []string `yaml:"require_tags"`
}

// Upstreams shapes the upstreams.
type Upstreams struct {
	CanaryTag   string              `yaml:"canary_tag"`
	WeightMeta  string              `yaml:"weight_meta"`
	Weight      int                 `yaml:"weight"`
	MaxFails    int                 `yaml:"max_fails"`
	FailTimeout Duration            `yaml:"fail_timeout"`
	MaxConns    int                 `yaml:"max_conns"`
	Keepalive   int                 `yaml:"keepalive"`
	Overrides   map[string]Override `yaml:"overrides"`
	// AllowAddresses and DenyAddresses are CIDR lists (or single
	// addresses) on top of the built-in refusals of loopback, link-local,
	// multicast, broadcast and unspecified addresses; the longest prefix
	// that holds an address decides (upstream.AddressPolicy).
	AllowAddresses []string `yaml:"allow_addresses"`
	DenyAddresses  []string `yaml:"deny_addresses"`
	// Reserved names are never created: nginx.conf's own upstream blocks,
	// which a service of the same name would duplicate in the file.
	Reserved []string `yaml:"reserved"`
	// Splits send part of an upstream's requests, by share or by header
	// or cookie match, to another upstream (blue/green, canary), by the
	// name of the upstream split. Applied on Lua targets without reload.
	Splits split.Table `yaml:"splits"`
	// SplitsConsulPrefix, when set, is a Consul KV prefix whose keys
	// <prefix>/<upstream> hold split rules as JSON; they replace the
	// configured rule of the same upstream.
	SplitsConsulPrefix string `yaml:"splits_consul_prefix"`
}

// Rules turns the services and upstreams sections into the rules every
// source builds its snapshot with.
func (cfg *Config) Rules() registry.Rules {
	u := cfg.Upstreams
	rules := registry.Rules{
		Include:     cfg.Services.Include,
		Exclude:     cfg.Services.Exclude,
		RequireTags: cfg.Services.RequireTags,
		CanaryTag:   u.CanaryTag,
		WeightMeta:  u.WeightMeta,
		Weight:      u.Weight,
		MaxFails:    u.MaxFails,
		FailTimeout: time.Duration(u.FailTimeout),
		MaxConns:    u.MaxConns,
		Keepalive:   u.Keepalive,
		Addresses:   u.AddressPolicy(),
		Reserved:    u.Reserved,
	}
	for name, o := range u.Overrides {
		if o.Keepalive != nil {
			if rules.KeepaliveFor == nil {
				rules.KeepaliveFor = map[string]int{}
			}
			rules.KeepaliveFor[name] = *o.Keepalive
		}
		o.applyTo(&rules, name)
	}
	return rules
}

// TargetOptions are the dyups options of target i, every default
// resolved: a zero timeout is 5s, a zero reconcile.max_reads is 4 ×
// reads, or reads when nginx_pid watches the workers. A one-shot run
// (once) gives up after a few attempts and runs no drift check.
func (cfg *Config) TargetOptions(i int, oneShot bool) dyups.Options {
	tc := cfg.Targets[i]
	opt := dyups.DefaultOptions()
	if tc.Timeout > 0 {
		opt.Timeout = time.Duration(tc.Timeout)
	}
	opt.DetailReads = cfg.Reconcile.Reads
	switch {
	case cfg.Reconcile.MaxReads > 0:
		opt.DetailMaxReads = cfg.Reconcile.MaxReads
	case tc.NginxPID != "":
		opt.DetailMaxReads = cfg.Reconcile.Reads
	default:
		opt.DetailMaxReads = 4 * cfg.Reconcile.Reads
	}
	opt.NginxPID, opt.WorkerReadyDelay = tc.NginxPID, time.Duration(tc.WorkerReadyDelay)
	if oneShot {
		opt.MaxAttempts = OneShotAttempts
	} else {
		opt.Resync = time.Duration(cfg.Reconcile.Interval)
	}
	return opt
}

// OneShotAttempts bounds the retries of each request in once: a one-shot
// command must fail rather than wait for a dead nginx.
const OneShotAttempts = 4

// AddressPolicy is the validated policy of allow_addresses and
// deny_addresses (entries that do not parse are reported by Validate).
func (u Upstreams) AddressPolicy() upstream.AddressPolicy {
	var p upstream.AddressPolicy
	for _, s := range u.AllowAddresses {
		if pr, err := upstream.ParsePrefix(s); err == nil {
			p.Allow = append(p.Allow, pr)
		}
	}
	for _, s := range u.DenyAddresses {
		if pr, err := upstream.ParsePrefix(s); err == nil {
			p.Deny = append(p.Deny, pr)
		}
	}
	return p
}

// Override sets per-upstream values. The server defaults replace the
// upstreams section's for this upstream's servers; a value the registry
// gives a server (weight meta, upsync parameters) still wins.
type Override struct {
	Keepalive *int `yaml:"keepalive"`
	// Balance is round_robin (default), least_conn, ip_hash, or
	// "hash KEY [consistent]" (upstream.ParseBalance).
	Balance     string    `yaml:"balance"`
	Weight      *int      `yaml:"weight"`
	MaxFails    *int      `yaml:"max_fails"`
	FailTimeout *Duration `yaml:"fail_timeout"`
	MaxConns    *int      `yaml:"max_conns"`
}

// Target is one nginx dyups interface.
type Target struct {
	URL     string   `yaml:"url"`
	Timeout Duration `yaml:"timeout"`
	// NginxPID is the pid file of that nginx, when it runs on this host:
	// its workers are then watched, and every upstream is pushed again
	// WorkerReadyDelay after a worker is gone or a new worker or master
	// appears (a worker that replaces a crashed one under real dyups lacks
	// the dynamic state).
	NginxPID         string   `yaml:"nginx_pid"`
	WorkerReadyDelay Duration `yaml:"worker_ready_delay"` // 0 = at once
	// SecretFile holds a shared secret sent to this target in the header
	// X-SwallowKeeper-Secret on every request (the Lua module's init option
	// secret_file checks it). The secret itself is never in this file and
	// never printed; read it with TargetSecret.
	SecretFile string `yaml:"secret_file"`

	// problems are the decoder's messages about this entry, kept here
	// rather than returned: a refused entry would vanish from the list
	// and shift the index of every later target in the messages.
	problems []string
}

// Reconcile is the drift check of dyups targets: every Interval, read
// GET /detail Reads times (each over a new connection, so that different
// nginx workers answer) and push again whatever nginx lost or had changed
// behind our back.
type Reconcile struct {
	Interval Duration `yaml:"interval"` // 0s disables
	Reads    int      `yaml:"reads"`
	// MaxReads: while every answer is the same, read on up to MaxReads
	// reads (or 1s), since a stale worker may hide behind another. 0 =
	// 4 × Reads, or Reads for a target whose workers are watched.
	MaxReads int `yaml:"max_reads"`
}

// Reload is the data plane for plain nginx without dyups or Lua: after the
// file is written, run Test (nginx -t) and then Command (nginx -s reload),
// once per settled burst of changes.
type Reload struct {
	Enabled bool     `yaml:"enabled"`
	Test    []string `yaml:"test"`
	Command []string `yaml:"command"`
	MinWait Duration `yaml:"min_wait"`
	MaxWait Duration `yaml:"max_wait"`
}

// Guards are the safety rules.
type Guards struct {
	MinServices int `yaml:"min_services"`
	// MaxDrop is the share of an upstream's servers that may go in one
	// step; a bigger drop (or the upstream's removal) is applied only if
	// the registry still shows it ConfirmAfter later.
	MaxDrop float64 `yaml:"max_drop"`
	// MaxTotalDrop is the same for all servers together; a bigger fall
	// holds every change until confirmed.
	MaxTotalDrop float64  `yaml:"max_total_drop"`
	ConfirmAfter Duration `yaml:"confirm_after"` // 0s turns the drop guards off
}

// Wait is the quiescence window before applying a change.
type Wait struct {
	Min Duration `yaml:"min"`
	Max Duration `yaml:"max"`
}

// SettleWait is the engine's quiescence window: wait.*, except that in
// reload mode, where it is the only window before a reload, it is never
// shorter than reload.min_wait and reload.max_wait (the larger of each
// pair), so a configuration that sets no wait keeps reloading at most
// once per burst as before.
func (c *Config) SettleWait() Wait {
	w := c.Wait
	if c.Reload.Enabled {
		w.Min, w.Max = max(w.Min, c.Reload.MinWait), max(w.Max, c.Reload.MaxWait, w.Min, c.Reload.MinWait)
	}
	return w
}

// Log output.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Metrics is the daemon's own HTTP listener: /metrics, /healthz, /readyz,
// /status, the status page and, when enabled, /debug/pprof/.
type Metrics struct {
	Listen string `yaml:"listen"` // "" disables
	// Pprof serves /debug/pprof/ (profiles, heap dumps) on the listener;
	// off by default.
	Pprof bool `yaml:"pprof"`
	// AllowedHosts are the host names (no port) the status page, /status
	// and pprof answer to, besides IP literals and localhost: a defence
	// against DNS rebinding. /metrics, /healthz and /readyz answer any Host.
	AllowedHosts []string `yaml:"allowed_hosts"`
}

// DefaultTarget is the dyups interface of the sample nginx configs: a unix
// socket, so that no TCP request (and no request nginx proxies) reaches it.
const DefaultTarget = "unix:/run/swallowkeeper/dyups.sock"

// Default returns the configuration used when a field is not set.
func Default() Config {
	return Config{
		Source: SourceConsul,
		Etcd: Etcd{
			Endpoints:   []string{"127.0.0.1:2379"},
			Layout:      "upsync",
			DialTimeout: Duration(5 * time.Second),
			Resync:      Duration(10 * time.Minute),
		},
		ZooKeeper: ZooKeeper{
			Servers:        []string{"127.0.0.1:2181"},
			Layout:         "curator",
			Root:           "/services",
			SessionTimeout: Duration(10 * time.Second),
			Resync:         Duration(10 * time.Minute),
		},
		Consul: Consul{
			Address:  "127.0.0.1:8500",
			Scheme:   "http",
			WaitTime: Duration(5 * time.Minute),
			Resync:   Duration(10 * time.Minute),
			Mode:     ConsulModeServices,
			KVPrefix: defaultConsulKVPrefix,
			Weights:  ConsulWeightsMeta,
			Watch:    consul.WatchCatalog,
		},
		Services: Services{Exclude: []string{"consul"}},
		Upstreams: Upstreams{
			CanaryTag:   "gray",
			WeightMeta:  "weight",
			Weight:      1,
			MaxFails:    1,
			FailTimeout: Duration(10 * time.Second),
			Keepalive:   16,
			// The placeholder upstream of the sample Lua configs.
			Reserved: []string{"swallowkeeper_backend"},
		},
		File:      "/var/lib/swallowkeeper/upstreams.conf",
		Targets:   []Target{{URL: DefaultTarget}},
		Reconcile: Reconcile{Interval: Duration(5 * time.Second), Reads: 3},
		Reload: Reload{
			Test:    []string{"nginx", "-t", "-q"},
			Command: []string{"nginx", "-s", "reload"},
			MinWait: Duration(time.Second),
			MaxWait: Duration(5 * time.Second),
		},
		Guards:  Guards{MinServices: 1, MaxDrop: 0.5, MaxTotalDrop: 0.5, ConfirmAfter: Duration(5 * time.Second)},
		Log:     Log{Level: "info", Format: "text"},
		Metrics: Metrics{Listen: "127.0.0.1:9145"},
	}
}

// Load reads path over the defaults. It does not apply the environment
// (ApplyEnv) nor validate (Validate).
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes YAML over the defaults, refusing unknown fields. A file
// that is not YAML returns (nil, err). Otherwise every unknown key and
// every value of the wrong type is an error with its file:line, and the
// rest of the file is still decoded: Parse returns that config with the
// error, and Validate repeats these errors among its own, sorted by line,
// so a caller that goes on to Validate shows every problem in one run.
func Parse(path string, data []byte) (*Config, error) {
	c := Default()
	c.path = path
	// A list given in the file replaces the default list; start targets
	// empty so that entries are not merged into the default one.
	var probe struct {
		Targets *[]Target `yaml:"targets"`
		Etcd    struct {
			Endpoints *[]string `yaml:"endpoints"`
		} `yaml:"etcd"`
		ZooKeeper struct {
			Servers *[]string `yaml:"servers"`
		} `yaml:"zookeeper"`
	}
	if err := yaml.Unmarshal(data, &probe); err == nil {
		if probe.Targets != nil {
			c.Targets = nil
		}
		if probe.Etcd.Endpoints != nil {
			c.Etcd.Endpoints = nil
		}
		if probe.ZooKeeper.Servers != nil {
			c.ZooKeeper.Servers = nil
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(&c)
	// Reload mode with no targets given has none: the default dyups
	// target would never sync, and readiness would wait for it forever.
	if c.Reload.Enabled && probe.Targets == nil {
		c.Targets = nil
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err == nil {
		c.lines = map[string]int{}
		indexLines(&root, "", c.lines)
	}
	var problems []string
	if err != nil && !errors.Is(err, io.EOF) { // an empty file means all defaults
		var te *yaml.TypeError
		if !errors.As(err, &te) { // not YAML: nothing was decoded
			return nil, yamlError(path, data, err)
		}
		problems = te.Errors
	}
	for i := range c.Targets {
		problems = append(problems, c.Targets[i].problems...)
		c.Targets[i].problems = nil
	}
	if len(problems) > 0 {
		// Wrong keys and values leave their defaults and the decode goes
		// on: hand back the rest, so that Validate can add its findings.
		c.decodeErrs = c.typeErrors(problems, &root)
		return &c, c.joinErrors(slices.Clone(c.decodeErrs))
	}
	return &c, nil
}

var yamlLine = regexp.MustCompile(`line (\d+): `)

// yamlError rewrites the YAML library's syntax error "line N: ..." into
// "file:N: ...".
func yamlError(path string, data []byte, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("config: %s:%s: %s%s", path, m[1], yamlLine.ReplaceAllString(msg, ""), syntaxHint(msg, data))
	}
	return fmt.Errorf("config: %s: %s%s", path, msg, syntaxHint(msg, data))
}

// UnmarshalYAML takes a target as a mapping ({url: …, timeout: …}) or as
// its URL alone (targets: [unix:/run/swallowkeeper/dyups.sock]).
func (t *Target) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*t = Target{URL: n.Value}
		return nil
	}
	// Decoding through a plain type loses the decoder's strictness about
	// unknown fields: check them here, in the decoder's own words, and
	// still decode the known ones so that their problems show too.
	var unknown []string
	if n.Kind == yaml.MappingNode {
		known := map[string]bool{}
		rt := reflect.TypeOf(Target{})
		for i := range rt.NumField() {
			known[strings.Split(rt.Field(i).Tag.Get("yaml"), ",")[0]] = true
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := n.Content[i]; !known[k.Value] {
				unknown = append(unknown, fmt.Sprintf("line %d: field %s not found in type config.Target", k.Line, k.Value))
			}
		}
	}
	type plain Target // without this method
	err := n.Decode((*plain)(t))
	var te *yaml.TypeError
	if err != nil && !errors.As(err, &te) {
		return err
	}
	if te != nil {
		unknown = append(unknown, te.Errors...)
	}
	t.problems = unknown // Parse reports them
	return nil
}

// indexLines records the line of every mapping value and sequence item
// under a dotted path: consul.address, targets[0].url.
func indexLines(n *yaml.Node, path string, lines map[string]int) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			indexLines(c, path, lines)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			lines[p] = k.Line
			indexLines(v, p, lines)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			lines[p] = c.Line
			indexLines(c, p, lines)
		}
	}
}

// Where returns "file:line: field" for error messages, as precise as the
// file allows; fields set by flags or the environment have no line.
func (c *Config) Where(field string) string {
	if c.path == "" {
		return field
	}
	if line, ok := c.lineOf(field); ok {
		return fmt.Sprintf("%s:%d: %s", c.path, line, field)
	}
	return c.path + ": " + field
}

// lineOf returns the line of field, or of its nearest parent in the file.
func (c *Config) lineOf(field string) (int, bool) {
	for p := field; p != ""; {
		if line, ok := c.lines[p]; ok {
			return line, true
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0, false
}

// MarkOverridden records that field was set outside the file (flag or
// environment), so errors do not point at a file line for it.
func (c *Config) MarkOverridden(field, source string) {
	if c.lines == nil {
		c.lines = map[string]int{}
	}
	delete(c.lines, field)
	if c.overrides == nil {
		c.overrides = map[string]string{}
	}
	c.overrides[field] = source
}

// ApplyEnv applies Consul's own environment variables, as the consul CLI
// reads them: they override the file.
func (c *Config) ApplyEnv(getenv func(string) string) error {
	if v := getenv("CONSUL_HTTP_ADDR"); v != "" {
		c.Consul.Address = v
		c.MarkOverridden("consul.address", "$CONSUL_HTTP_ADDR")
	}
	if v := getenv("CONSUL_HTTP_SSL"); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("config: $CONSUL_HTTP_SSL=%q: want true or false", v)
		}
		if on {
			c.Consul.Scheme = "https"
		}
		c.MarkOverridden("consul.scheme", "$CONSUL_HTTP_SSL")
	}
	if v := getenv("CONSUL_HTTP_TOKEN_FILE"); v != "" {
		c.Consul.TokenFile = v
		c.MarkOverridden("consul.token_file", "$CONSUL_HTTP_TOKEN_FILE")
	}
	if v := getenv("CONSUL_HTTP_TOKEN"); v != "" {
		c.Consul.Token = Secret(v)
	}
	for env, field := range map[string]*string{
		"CONSUL_CACERT":          &c.Consul.TLS.CAFile,
		"CONSUL_CLIENT_CERT":     &c.Consul.TLS.CertFile,
		"CONSUL_CLIENT_KEY":      &c.Consul.TLS.KeyFile,
		"CONSUL_TLS_SERVER_NAME": &c.Consul.TLS.ServerName,
	} {
		if v := getenv(env); v != "" {
			*field = v
		}
	}
	if v := getenv("CONSUL_DATACENTER"); v != "" {
		c.Consul.Datacenter = v
	}
	return nil
}

// ResolveToken reads the token file when no token came from the
// environment. A token file that cannot be read is an error naming it.
func (c *Config) ResolveToken() error {
	if c.Consul.Token != "" || c.Consul.TokenFile == "" {
		return nil
	}
	b, err := os.ReadFile(c.Consul.TokenFile)
	if err != nil {
		return fmt.Errorf("config: %s: token file: %w", c.Where("consul.token_file"), err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return fmt.Errorf("config: %s: token file %s is empty", c.Where("consul.token_file"), c.Consul.TokenFile)
	}
	c.Consul.Token = Secret(tok)
	return nil
}

// Validate checks every field and returns all problems at once.
func (c *Config) Validate() error {
	var errs []fileError
	bad := func(field, format string, args ...any) {
		where := c.Where(field)
		line, _ := c.lineOf(field)
		if src, ok := c.overrides[field]; ok {
			where = field + " (from " + src + ")"
			line = 0
		}
		errs = append(errs, fileError{line: line, field: field, text: fmt.Sprintf("%s: %s", where, fmt.Sprintf(format, args...))})
	}

	switch c.Source {
	case SourceConsul, SourceEtcd, SourceZooKeeper:
	default:
		bad("source", "%q: want consul, etcd or zookeeper", c.Source)
	}
	if c.Source == SourceEtcd {
		c.validateEtcd(bad)
	}
	if c.Source == SourceZooKeeper {
		c.validateZooKeeper(bad)
	}
	// Only the chosen source's section is used, so only it is checked:
	// CONSUL_* variables left in the environment do not stop an etcd or
	// ZooKeeper daemon.
	if c.Source == SourceConsul {
		c.validateConsul(bad)
	}
	c.validateUpstreams(bad)
	c.validateOutputs(bad)
	c.validateTargets(bad)
	c.validateRest(bad)
	return c.joinErrors(c.withDecodeErrors(errs))
}

// badFunc records one problem of a field.
type badFunc func(field, format string, args ...any)

func (c *Config) validateConsul(bad badFunc) {
	if _, _, err := SplitConsulAddress(c.Consul.Address, c.Consul.Scheme); err != nil {
		bad("consul.address", "%v", err)
	}
	if c.Consul.Scheme != "http" && c.Consul.Scheme != "https" {
		bad("consul.scheme", "%q: want http or https", c.Consul.Scheme)
	}
	for field, path := range map[string]string{
		"consul.tls.ca_file":   c.Consul.TLS.CAFile,
		"consul.tls.cert_file": c.Consul.TLS.CertFile,
		"consul.tls.key_file":  c.Consul.TLS.KeyFile,
		"consul.token_file":    c.Consul.TokenFile,
	} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			bad(field, "%v", err)
		}
	}
	if (c.Consul.TLS.CertFile == "") != (c.Consul.TLS.KeyFile == "") {
		bad("consul.tls", "cert_file and key_file go together")
	}
	if c.Consul.WaitTime < Duration(time.Second) || c.Consul.WaitTime > Duration(10*time.Minute) {
		bad("consul.wait_time", "%v: want 1s to 10m (Consul caps blocking queries at 10m)", c.Consul.WaitTime)
	}
	if c.Consul.Resync < 0 {
		bad("consul.resync", "%v: must not be negative (0 disables)", c.Consul.Resync)
	}
	c.validateConsulMode(bad)

}

// validateUpstreams checks what shapes the upstreams.
func (c *Config) validateUpstreams(bad badFunc) {
	u := c.Upstreams
	if strings.ContainsAny(u.CanaryTag, "= \t\n") {
		bad("upstreams.canary_tag", "%q: a tag key, without '=' or spaces", u.CanaryTag)
	}
	checkRange := func(field string, v, lo, hi int) {
		if v < lo || v > hi {
			bad(field, "%d out of range %d-%d", v, lo, hi)
		}
	}
	checkRange("upstreams.weight", u.Weight, 1, upstream.MaxWeight)
	checkRange("upstreams.max_fails", u.MaxFails, 0, upstream.MaxMaxFails)
	checkRange("upstreams.max_conns", u.MaxConns, 0, upstream.MaxMaxConns)
	checkRange("upstreams.keepalive", u.Keepalive, 0, upstream.MaxKeepalive)
	if ft := time.Duration(u.FailTimeout); ft < 0 || ft > upstream.MaxFailTimeout || ft%time.Second != 0 {
		bad("upstreams.fail_timeout", "%v: want whole seconds from 0s to 24h", ft)
	}
	for _, l := range []struct {
		field   string
		entries []string
	}{{"upstreams.allow_addresses", u.AllowAddresses}, {"upstreams.deny_addresses", u.DenyAddresses}} {
		for i, e := range l.entries {
			if _, err := upstream.ParsePrefix(e); err != nil {
				bad(fmt.Sprintf("%s[%d]", l.field, i), "%v", err)
			}
		}
	}
	for i, name := range u.Reserved {
		if err := upstream.ValidName(name); err != nil {
			bad(fmt.Sprintf("upstreams.reserved[%d]", i), "%v", err)
		}
	}
	for _, p := range split.CheckTable(u.Splits) {
		bad(strings.TrimSuffix("upstreams.splits."+p.Field, "."), "%s", p.Msg)
	}
	for name, r := range u.Splits {
		if registry.IsReserved(u.Reserved, r.To) {
			bad("upstreams.splits."+name+".to", "%q is a reserved name (upstreams.reserved): a split never sends requests to nginx.conf's own upstreams", r.To)
		}
	}
	if sp, kp := strings.Trim(u.SplitsConsulPrefix, "/"), strings.Trim(c.Consul.KVPrefix, "/"); sp != "" && c.Consul.Mode == ConsulModeKV &&
		(sp == kp || strings.HasPrefix(sp, kp+"/") || strings.HasPrefix(kp, sp+"/")) {
		bad("upstreams.splits_consul_prefix", "%q overlaps consul.kv_prefix %q: split rules would be read as upstreams, or upstreams' keys as split rules; use separate folders", u.SplitsConsulPrefix, c.Consul.KVPrefix)
	}
	if u.SplitsConsulPrefix != "" && c.Source != SourceConsul {
		bad("upstreams.splits_consul_prefix", "split rules from Consul KV need source: consul")
	}
	if p := u.SplitsConsulPrefix; strings.HasPrefix(p, "/") || strings.Contains(p, "//") || strings.ContainsFunc(p, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		bad("upstreams.splits_consul_prefix", "%q: a KV path such as swallowkeeper/splits, no leading '/', no spaces", p)
	}
	folded := map[string]string{}
	for _, name := range sortedKeys(u.Overrides) {
		o := u.Overrides[name]
		field := "upstreams.overrides." + name
		if err := upstream.ValidName(name); err != nil {
			bad(field, "%v", err)
		}
		if other, dup := folded[upstream.FoldKey(name)]; dup {
			bad(field, "differs from %s only in case: overrides match upstream names case-insensitively", other)
		}
		folded[upstream.FoldKey(name)] = name
		if o.Keepalive != nil {
			checkRange(field+".keepalive", *o.Keepalive, 0, upstream.MaxKeepalive)
		}
		o.validate(field, bad, checkRange)
	}

}

// validateOutputs checks the persisted file, the verify command and the
// data planes.
func (c *Config) validateOutputs(bad badFunc) {
	if c.File == "" {
		bad("file", "the persisted upstream file is required")
	} else if dir, base := filepath.Split(c.File); strings.ContainsAny(dir, "*?[\\") || base != store.DirGlob && strings.ContainsAny(base, "*?[\\") {
		bad("file", "%s: the only pattern taken is DIR/*.conf (one file per upstream in DIR, the glob nginx.conf includes); otherwise name one file", c.File)
	} else if base == store.DirGlob {
		if fi, err := os.Stat(filepath.Dir(c.File)); err != nil || !fi.IsDir() {
			bad("file", "directory %s does not exist: create it (install -d -o swallowkeeper %s), or name a file in an existing directory", filepath.Dir(c.File), filepath.Dir(c.File))
		}
	} else if fi, err := os.Stat(filepath.Dir(c.File)); err != nil || !fi.IsDir() {
		bad("file", "directory of %s does not exist: create it (install -d -o swallowkeeper %s; the systemd unit's StateDirectory= does), or set file to a path in an existing directory", c.File, filepath.Dir(c.File))
	}

	if len(c.Verify) > 0 {
		if c.Verify[0] == "" {
			bad("verify", "the command is empty; want e.g. [nginx, -t, -q], or [] for none")
		} else if _, err := exec.LookPath(c.Verify[0]); err != nil {
			bad("verify", "%v", err)
		}
	}
	if len(c.Targets) == 0 && !c.Reload.Enabled {
		bad("targets", "at least one nginx target is required (or reload.enabled for plain nginx)")
	}
	if c.Reload.Enabled {
		if len(c.Reload.Command) == 0 || c.Reload.Command[0] == "" {
			bad("reload.command", "a reload command is required, e.g. [nginx, -s, reload]")
		}
		if c.Reload.MinWait < 0 || c.Reload.MaxWait < c.Reload.MinWait {
			bad("reload.max_wait", "%v: want min_wait <= max_wait, both >= 0", c.Reload.MaxWait)
		}
	}
}

func (c *Config) validateTargets(bad badFunc) {
	seen := map[string]bool{}
	for i, t := range c.Targets {
		field := fmt.Sprintf("targets[%d]", i)
		if strings.Contains(t.URL, "://") && hasUserinfo(t.URL) {
			bad(field+".url", "%q: credentials in a target URL are not supported", RedactURL(t.URL))
			continue
		}
		if hint, ok := schemeless(t.URL); ok {
			bad(field+".url", "%q has no scheme: write %s", t.URL, hint)
			continue
		}
		base, err := dyups.ParseBaseURL(t.URL)
		if err != nil {
			bad(field+".url", "%v", err)
			continue
		}
		if seen[base.String()] {
			bad(field+".url", "%s is listed twice", base)
		}
		seen[base.String()] = true
		if t.Timeout < 0 {
			bad(field+".timeout", "%v: must not be negative", t.Timeout)
		}
		if t.SecretFile != "" {
			if _, err := readSecretFile(t.SecretFile); err != nil {
				bad(field+".secret_file", "%v", err)
			}
		}
		if t.NginxPID != "" && !filepath.IsAbs(t.NginxPID) {
			bad(field+".nginx_pid", "%s: want an absolute path", t.NginxPID)
		}
		if t.WorkerReadyDelay < 0 || t.WorkerReadyDelay > Duration(time.Minute) {
			bad(field+".worker_ready_delay", "%v out of range 0s-1m", t.WorkerReadyDelay)
		}
		if t.WorkerReadyDelay != 0 && t.NginxPID == "" {
			bad(field+".worker_ready_delay", "needs nginx_pid: workers are watched only through it")
		}
	}

}

// validateRest checks the drift check, guards, wait, log and listener.
func (c *Config) validateRest(bad badFunc) {
	if c.Reconcile.Interval < 0 {
		bad("reconcile.interval", "%v: must not be negative (0s disables)", c.Reconcile.Interval)
	}
	if c.Reconcile.Reads < 1 || c.Reconcile.Reads > 100 {
		bad("reconcile.reads", "%d out of range 1-100", c.Reconcile.Reads)
	}
	if m := c.Reconcile.MaxReads; m != 0 && (m < c.Reconcile.Reads || m > 400) {
		bad("reconcile.max_reads", "%d: want 0 (4 × reads) or reads (%d) to 400", m, c.Reconcile.Reads)
	}
	if c.Guards.MinServices < 0 {
		bad("guards.min_services", "%d: must not be negative", c.Guards.MinServices)
	}
	if d := c.Guards.MaxDrop; !(d > 0 && d <= 1) {
		bad("guards.max_drop", "%v: want a share above 0 and at most 1 (0.5 = half of an upstream's servers)", d)
	}
	if d := c.Guards.MaxTotalDrop; !(d > 0 && d <= 1) {
		bad("guards.max_total_drop", "%v: want a share above 0 and at most 1", d)
	}
	if c.Guards.ConfirmAfter < 0 || c.Guards.ConfirmAfter > Duration(time.Hour) {
		bad("guards.confirm_after", "%v: want 0s (off) to 1h", c.Guards.ConfirmAfter)
	}
	if c.Wait.Min < 0 || c.Wait.Max < 0 {
		bad("wait", "durations must not be negative")
	}
	if c.Wait.Max > 0 && c.Wait.Max < c.Wait.Min {
		bad("wait.max", "%v is shorter than wait.min %v", c.Wait.Max, c.Wait.Min)
	}
	if _, err := ParseLevel(c.Log.Level); err != nil {
		bad("log.level", "%v", err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "%q: want text or json", c.Log.Format)
	}
	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			bad("metrics.listen", "%q: want host:port, or empty to disable", c.Metrics.Listen)
		}
	}
	for i, h := range c.Metrics.AllowedHosts {
		if err := validAllowedHost(h); err != nil {
			bad(fmt.Sprintf("metrics.allowed_hosts[%d]", i), "%v", err)
		}
	}
}

func (c *Config) validateEtcd(bad badFunc) {
	e := c.Etcd
	if len(e.Endpoints) == 0 {
		bad("etcd.endpoints", "at least one endpoint is required, e.g. [127.0.0.1:2379]")
	}
	for i, ep := range e.Endpoints {
		if _, _, err := SplitEtcdEndpoint(ep); err != nil {
			bad(fmt.Sprintf("etcd.endpoints[%d]", i), "%v", err)
		}
	}
	if e.Layout != "upsync" && e.Layout != "service" {
		bad("etcd.layout", "%q: want upsync or service", e.Layout)
	}
	if e.Prefix != "" && !strings.HasPrefix(e.Prefix, "/") {
		bad("etcd.prefix", "%q: want an absolute key prefix like /upstreams", e.Prefix)
	}
	for field, path := range map[string]string{
		"etcd.tls.ca_file":   e.TLS.CAFile,
		"etcd.tls.cert_file": e.TLS.CertFile,
		"etcd.tls.key_file":  e.TLS.KeyFile,
		"etcd.password_file": e.PasswordFile,
	} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			bad(field, "%v", err)
		}
	}
	if (e.TLS.CertFile == "") != (e.TLS.KeyFile == "") {
		bad("etcd.tls", "cert_file and key_file go together")
	}
	if (e.Username == "") != (e.PasswordFile == "") {
		bad("etcd.username", "username and password_file go together")
	}
	if e.DialTimeout <= 0 {
		bad("etcd.dial_timeout", "%v: must be positive", e.DialTimeout)
	}
	if e.Resync < 0 {
		bad("etcd.resync", "%v: must not be negative (0 disables)", e.Resync)
	}
}

func (c *Config) validateZooKeeper(bad badFunc) {
	z := c.ZooKeeper
	if len(z.Servers) == 0 {
		bad("zookeeper.servers", "at least one server is required, e.g. [127.0.0.1:2181]")
	}
	for i, s := range z.Servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			bad(fmt.Sprintf("zookeeper.servers[%d]", i), "%q: want host:port", s)
		}
	}
	if z.Layout != "curator" && z.Layout != "plain" {
		bad("zookeeper.layout", "%q: want curator or plain", z.Layout)
	}
	if !strings.HasPrefix(z.Root, "/") {
		bad("zookeeper.root", "%q: want an absolute znode path like /services", z.Root)
	}
	if z.SessionTimeout < Duration(time.Second) || z.SessionTimeout > Duration(time.Minute) {
		bad("zookeeper.session_timeout", "%v: want 1s to 1m", z.SessionTimeout)
	}
	if z.Resync < 0 {
		bad("zookeeper.resync", "%v: must not be negative (0 disables)", z.Resync)
	}
}

// SplitEtcdEndpoint accepts "host:port" or "scheme://host:port" and
// returns host:port and the scheme. Credentials in the endpoint are
// refused, and never echoed in the error.
func SplitEtcdEndpoint(ep string) (string, string, error) {
	if hasUserinfo(ep) {
		return "", "", fmt.Errorf("%q: credentials in the endpoint are not supported: use etcd.username and etcd.password_file", RedactURL(ep))
	}
	scheme := "http"
	shown := ep
	if s, rest, ok := strings.Cut(ep, "://"); ok {
		if s != "http" && s != "https" {
			return "", "", fmt.Errorf("%q: scheme must be http or https", shown)
		}
		scheme, ep = s, strings.TrimSuffix(rest, "/")
	}
	if _, _, err := net.SplitHostPort(ep); err != nil {
		return "", "", fmt.Errorf("%q: want host:port: %v", shown, addrErr(err))
	}
	return ep, scheme, nil
}

// hasUserinfo reports whether a URL or host:port carries "user[:pass]@"
// before its host.
func hasUserinfo(s string) bool {
	_, rest, ok := strings.Cut(s, "://")
	if !ok {
		rest = s
	}
	return strings.Contains(rest, "@")
}

// RedactURL hides the credentials of a URL or address, for messages:
// "http://user:pass@host:8500" becomes "http://user:xxxxx@host:8500".
// Userinfo without a password is hidden whole ("xxxxx@host"), since a lone
// user part is often a token. Everything up to the last '@' after the
// scheme counts as userinfo, so a password holding '/', ':' or '@' does
// not leak either.
func RedactURL(s string) string {
	prefix, rest, ok := strings.Cut(s, "://")
	if ok {
		prefix += "://"
	} else {
		prefix, rest = "", s
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return s
	}
	user, _, hasPass := strings.Cut(rest[:at], ":")
	if !hasPass || user == "" {
		return prefix + "xxxxx" + rest[at:]
	}
	return prefix + user + ":xxxxx" + rest[at:]
}

// addrErr is net.SplitHostPort's reason without the address it quotes,
// which the caller shows itself (redacted if need be).
func addrErr(err error) error {
	var ae *net.AddrError
	if errors.As(err, &ae) {
		return errors.New(ae.Err)
	}
	return err
}

// validAllowedHost checks one metrics.allowed_hosts entry: a host name as
// it appears in a Host header, without port, scheme or path.
func validAllowedHost(h string) error {
	switch {
	case h == "":
		return errors.New("empty host name")
	case strings.ContainsAny(h, "/:@ \t*"):
		return fmt.Errorf("%q: want a host name without scheme, port, path or wildcard (IP literals and localhost are always allowed)", h)
	}
	return nil
}

// TargetSecret reads the secret of targets[i] (surrounding whitespace
// trimmed); "" without a secret_file. An unreadable or empty file is an
// error naming the field.
func (c *Config) TargetSecret(i int) (Secret, error) {
	if c.Targets[i].SecretFile == "" {
		return "", nil
	}
	s, err := readSecretFile(c.Targets[i].SecretFile)
	if err != nil {
		return "", fmt.Errorf("config: %s: %w", c.Where(fmt.Sprintf("targets[%d].secret_file", i)), err)
	}
	return s, nil
}

// readSecretFile reads a secret, surrounding whitespace trimmed; empty is
// an error.
func readSecretFile(file string) (Secret, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("secret file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("secret file %s is empty", file)
	}
	return Secret(s), nil
}

// ReadPassword reads the etcd password file; "" without one.
func (c *Config) ReadPassword() (Secret, error) {
	if c.Etcd.PasswordFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(c.Etcd.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("config: %s: password file: %w", c.Where("etcd.password_file"), err)
	}
	return Secret(strings.TrimSpace(string(b))), nil
}

// SplitConsulAddress accepts "host:port" or "scheme://host:port" (as
// CONSUL_HTTP_ADDR does) and returns host:port and the scheme. Credentials
// in the address are refused, and never echoed in the error.
func SplitConsulAddress(addr, scheme string) (string, string, error) {
	if hasUserinfo(addr) {
		return "", "", fmt.Errorf("%q: credentials in the address are not supported: use consul.token_file or CONSUL_HTTP_TOKEN", RedactURL(addr))
	}
	shown := addr
	if s, rest, ok := strings.Cut(addr, "://"); ok {
		if s != "http" && s != "https" {
			return "", "", fmt.Errorf("%q: scheme must be http or https", shown)
		}
		scheme, addr = s, strings.TrimSuffix(rest, "/")
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", "", fmt.Errorf("%q: want host:port: %v", shown, addrErr(err))
	}
	return addr, scheme, nil
}

// ParseLevel maps a level name to slog.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%q: want debug, info, warn or error", s)
	}
	return l, nil
}

// Secret is a value that never prints (package secret): the Consul token,
// the etcd password, the targets' secrets.
type Secret = secret.Secret

// Duration is a time.Duration written with a unit ("10s", "5m"). A bare
// number is refused: "fail_timeout: 10" would otherwise mean 10ns.
type Duration time.Duration

const durationNotScalar = "want a duration like 10s"

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	// A *yaml.TypeError lets the decoder go on to the file's other keys.
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, durationNotScalar)}}
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %q is not a duration (want a number with a unit, like 10s or 500ms)", n.Line, n.Value)}}
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

func (d Duration) String() string { return time.Duration(d).String() }
