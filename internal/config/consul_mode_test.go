package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// consul.mode, kv_prefix, weights and address_from (issue 17, parts 2 and
// 4): defaults, accepted values, and each bad value named with its line.
func TestConsulModeKeys(t *testing.T) {
	d := Default()
	if d.Consul.Mode != "services" || d.Consul.KVPrefix != "upstreams" || d.Consul.Weights != "meta" || d.Consul.AddressFrom != "" {
		t.Fatalf("defaults: %+v", d.Consul)
	}
	load := func(t *testing.T, body string) (*Config, error) {
		t.Helper()
		dir := t.TempDir()
		path := filepath.Join(dir, "sk.yml")
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path)
		if err == nil {
			c.File = filepath.Join(dir, "u.conf")
			err = c.Validate()
		}
		return c, err
	}
	c, err := load(t, "consul:\n  mode: kv\n  kv_prefix: /nginx/upstreams/\n  weights: native\n  address_from: wan_ipv4\n")
	if err != nil {
		t.Fatal(err)
	}
	if o := c.ConsulKVOptions(); o.Prefix != "nginx/upstreams" {
		t.Errorf("kv prefix %q, want nginx/upstreams", o.Prefix)
	}
	if o := c.ConsulOptions(); !o.NativeWeights || o.AddressFrom != "wan_ipv4" {
		t.Errorf("options %+v", o)
	}
	_, err = load(t, "consul:\n  mode: keyvalue\n  weights: dns\n  address_from: virtual\n")
	if err == nil {
		t.Fatal("bad values accepted")
	}
	for _, want := range []string{`:2: consul.mode: "keyvalue": want services or kv`, `:3: consul.weights: "dns": want meta or native`, `:4: consul.address_from: "virtual": want one of`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\ndoes not contain %q", err, want)
		}
	}
	if _, err = load(t, "consul:\n  mode: kv\n  kv_prefix: /\n"); err == nil || !strings.Contains(err.Error(), `consul.kv_prefix: "/": empty`) {
		t.Errorf("kv_prefix / (the whole KV store): %v", err)
	}
	// The services mode does not read kv_prefix.
	if _, err = load(t, "consul:\n  kv_prefix: /\n"); err != nil {
		t.Errorf("kv_prefix checked in services mode: %v", err)
	}
}
