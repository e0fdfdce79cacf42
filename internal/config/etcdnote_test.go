package config

import (
	"strings"
	"testing"
)

// `check` notes when wrappers registering in etcd with their defaults would
// not be read (issue 16): a layout or prefix other than the defaults both
// sides share needs the matching register flags.
func TestEtcdWrapperNote(t *testing.T) {
	for _, c := range []struct {
		yaml string
		want string // "" for no note
	}{
		{"source: consul\n", ""},
		{"source: etcd\n", ""},
		{"source: etcd\netcd:\n  layout: upsync\n  prefix: /upstreams/\n", ""},
		{"source: etcd\netcd:\n  layout: service\n", "run it with -etcd-layout service"},
		{"source: etcd\netcd:\n  layout: service\n  prefix: /services\n", "run it with -etcd-layout service"},
		{"source: etcd\netcd:\n  prefix: /sd\n", "run it with -etcd-prefix /sd"},
		{"source: etcd\netcd:\n  layout: service\n  prefix: /sd\n", "run it with -etcd-layout service -etcd-prefix /sd"},
	} {
		cfg, err := Parse("test.yml", []byte(c.yaml))
		if err != nil {
			t.Fatalf("%q: %v", c.yaml, err)
		}
		got := cfg.EtcdWrapperNote()
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%q: note %q, want one containing %q", c.yaml, got, c.want)
		}
	}
}
