package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestConsulModeNotes: check names the consul settings the chosen mode
// does not read (weights and address_from in kv mode, kv_prefix in
// services mode), and nothing for settings that apply or are left at
// their defaults, nor when the source is not Consul.
func TestConsulModeNotes(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string // a substring per note, in order
	}{
		{name: "services defaults", yaml: "consul: {}\n"},
		{name: "kv defaults", yaml: "consul:\n  mode: kv\n"},
		{name: "kv with its prefix", yaml: "consul:\n  mode: kv\n  kv_prefix: nginx/upstreams\n"},
		{name: "services with native weights and an address key", yaml: "consul:\n  weights: native\n  address_from: lan_ipv4\n"},
		{name: "services with the default prefix spelt with slashes", yaml: "consul:\n  kv_prefix: /upstreams/\n"},
		{name: "kv with native weights", yaml: "consul:\n  mode: kv\n  weights: native\n",
			want: []string{`consul.weights: "native" does not apply in kv mode`}},
		{name: "kv with an address key", yaml: "consul:\n  mode: kv\n  address_from: wan\n",
			want: []string{`consul.address_from: "wan" does not apply in kv mode`}},
		{name: "kv with both", yaml: "consul:\n  mode: kv\n  weights: native\n  address_from: lan_ipv4\n",
			want: []string{`consul.weights: "native"`, `consul.address_from: "lan_ipv4"`}},
		{name: "kv with meta weights written out", yaml: "consul:\n  mode: kv\n  weights: meta\n"},
		{name: "services with a kv prefix", yaml: "consul:\n  kv_prefix: nginx/upstreams\n",
			want: []string{`consul.kv_prefix: "nginx/upstreams" does not apply in services mode`}},
		{name: "services named, with a kv prefix", yaml: "consul:\n  mode: services\n  kv_prefix: /\n",
			want: []string{`consul.kv_prefix: "/" does not apply in services mode`}},
		{name: "kv with a watch mode", yaml: "consul:\n  mode: kv\n  watch: per_service\n",
			want: []string{`consul.watch: "per_service" does not apply in kv mode`}},
		{name: "per_service over https", yaml: "consul:\n  address: https://127.0.0.1:8501\n  watch: per_service\n"},
		{name: "per_service over http", yaml: "consul:\n  watch: per_service\n",
			want: []string{`per_service over plain http holds one connection per service`}},
		{name: "per_service with a resync", yaml: "consul:\n  scheme: https\n  watch: per_service\n  resync: 1m\n",
			want: []string{`consul.resync does not apply with consul.watch: per_service`}},
		{name: "etcd source: no consul setting applies", yaml: "source: etcd\nconsul:\n  mode: kv\n  weights: native\n  address_from: wan\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "sk.yml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			c.File = filepath.Join(dir, "u.conf")
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			notes := c.ConsulModeNotes()
			if len(notes) != len(tc.want) {
				t.Fatalf("notes %q, want %d matching %q", notes, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(notes[i], w) {
					t.Errorf("note %d %q does not contain %q", i, notes[i], w)
				}
			}
			if slices.ContainsFunc(notes, func(n string) bool { return !strings.HasPrefix(n, "consul.") }) {
				t.Errorf("notes %q: each must name its key", notes)
			}
		})
	}
}
