package config

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/swallowkeeper/swallowkeeper/internal/split"
)

// TestSplitsConfig: upstreams.splits is decoded strictly and every problem
// is reported with its line and field.
func TestSplitsConfig(t *testing.T) {
	good := `
upstreams:
  splits:
    web:
      to: web_canary
      percent: 12.5
      sticky: cookie:sid
      match:
        header: {X-Canary: 1}
        cookie: {canary: "yes"}
`
	c, err := Parse("good.yml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	c.File = filepath.Join(t.TempDir(), "u.conf")
	if err := c.Validate(); err != nil {
		t.Fatalf("valid splits refused: %v", err)
	}
	r := c.Upstreams.Splits["web"]
	if r.To != "web_canary" || r.Percent != 12.5 || r.Sticky != "cookie:sid" || r.Match.Header["X-Canary"] != "1" || r.Match.Cookie["canary"] != "yes" {
		t.Errorf("decoded %+v", r)
	}

	bad := `
upstreams:
  splits:
    web:
      to: web
      percent: 150
      sticky: ip
      match:
        header: {"X Canary": "1"}
        cookie: {c: "a b"}
    "api;":
      to: api_canary
    shop:
      to: shop_green
      precent: 5
  splits_consul_prefix: /swallowkeeper/splits
`
	c, err = Parse("bad.yml", []byte(bad))
	if c == nil {
		t.Fatalf("not YAML: %v", err)
	}
	c.File = filepath.Join(t.TempDir(), "u.conf")
	verr := c.Validate()
	if verr == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`bad.yml:5: upstreams.splits.web.to: "web" is the split's own upstream`,
		"bad.yml:6: upstreams.splits.web.percent: 150: want 0 to 100",
		`bad.yml:7: upstreams.splits.web.sticky: "ip": want addr, header:NAME or cookie:NAME`,
		`bad.yml:9: upstreams.splits.web.match.header.X Canary: "X Canary": a name is 1 to 64 token characters`,
		`bad.yml:10: upstreams.splits.web.match.cookie.c: "a b": a value is`,
		`bad.yml:11: upstreams.splits.api;: upstream name "api;"`,
		"bad.yml:15: upstreams.splits.shop.precent: unknown key",
		`bad.yml:16: upstreams.splits_consul_prefix: "/swallowkeeper/splits": a KV path`,
	} {
		if !strings.Contains(verr.Error(), want) {
			t.Errorf("error\n%v\ndoes not contain %q", verr, want)
		}
	}
}

// TestSplitsConsulPrefixMustNotOverlapKVMode: in Consul KV mode the split
// rules' folder and the upstreams' folder are kept apart (a rule key would
// be read as an upstream, an upstream key as a rule); a split to a reserved
// name is refused.
func TestSplitsConsulPrefixMustNotOverlapKVMode(t *testing.T) {
	for _, c := range []struct{ kvPrefix, splits, want string }{
		{"upstreams", "upstreams", `"upstreams" overlaps consul.kv_prefix "upstreams"`},
		{"upstreams", "upstreams/splits", `"upstreams/splits" overlaps consul.kv_prefix`},
		{"sk/upstreams", "sk", `"sk" overlaps consul.kv_prefix "sk/upstreams"`},
		{"/upstreams/", "upstreams/", "overlaps consul.kv_prefix"},
		{"upstreams", "upstreams-splits", ""},
		{"sk/upstreams", "sk/splits", ""},
	} {
		text := "consul:\n  mode: kv\n  kv_prefix: " + c.kvPrefix + "\nupstreams:\n  splits_consul_prefix: " + c.splits + "\n"
		cfg, err := Parse("kv.yml", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		cfg.File = filepath.Join(t.TempDir(), "u.conf")
		err = cfg.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("kv_prefix %s, splits %s: refused: %v", c.kvPrefix, c.splits, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), "upstreams.splits_consul_prefix: ") || !strings.Contains(err.Error(), c.want)):
			t.Errorf("kv_prefix %s, splits %s: %v, want %q", c.kvPrefix, c.splits, err, c.want)
		}
	}
	cfg, err := Parse("r.yml", []byte("upstreams:\n  splits:\n    swallowkeeper: {to: swallowkeeper_backend, percent: 100}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.File = filepath.Join(t.TempDir(), "u.conf")
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), `upstreams.splits.swallowkeeper.to: "swallowkeeper_backend" is a reserved name`) {
		t.Errorf("a split to the reserved name: %v", err)
	}
}

func TestSplitNotes(t *testing.T) {
	c := Default()
	if notes := c.SplitNotes(); notes != nil {
		t.Errorf("notes without splits: %q", notes)
	}
	c.Upstreams.Splits = map[string]split.Rule{"web": {To: "web_canary", Percent: 10}}
	notes := strings.Join(c.SplitNotes(), "\n")
	for _, want := range []string{"split web: 10% to web_canary", "a real dyups target has no split API: nothing is pushed there", "nginx/conf/dyups-split.conf"} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes %q do not say %q", notes, want)
		}
	}
	c.Targets = nil
	if notes := strings.Join(c.SplitNotes(), "\n"); !strings.Contains(notes, "NOT applied in reload mode") {
		t.Errorf("reload mode notes: %q", notes)
	}
}
