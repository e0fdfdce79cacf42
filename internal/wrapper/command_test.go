package wrapper

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The command line is checked before anything runs: each mistake exits 2
// with a message naming the flag, and no registry is touched.
func TestCommandRefusesBadFlags(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	badAuth := filepath.Join(dir, "auth")
	os.WriteFile(empty, []byte(" \n"), 0o600)
	os.WriteFile(badAuth, []byte("s3cret-pw\n"), 0o600)
	base := []string{"-service", "web", "-port", "8080", "-address", "10.0.0.1"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-nope"}, "flag provided but not defined: -nope"},
		{[]string{"-meta", "weight"}, `-meta "weight": want key=value`},
		{[]string{"-meta", "=3"}, `-meta "=3": want key=value`},
		{[]string{"-registry", "eureka"}, `-registry "eureka": want consul, etcd or zookeeper`},
		{[]string{"-stop-signal", "KILL"}, `-stop-signal "KILL": want TERM, INT, QUIT, HUP, USR1 or USR2`},
		{[]string{"-consul-addr", "ftp://127.0.0.1:8500"}, "-consul-addr:"},
		{[]string{"-drain-secret-file", filepath.Join(dir, "missing")}, "-drain-secret-file:"},
		{[]string{"-drain-secret-file", empty}, "is empty"},
		{[]string{"-registry", "zookeeper", "-zookeeper-auth-file", badAuth}, "zookeeper auth: want <scheme>:<credentials>"},
		{[]string{"-registry", "zookeeper", "-zookeeper-layout", "upsync"}, `zookeeper: unknown layout "upsync"`},
		{[]string{"-registry", "etcd", "-etcd-layout", "curator"}, `etcd: unknown layout "curator"`},
		{[]string{"-registry", "etcd", "-etcd-endpoints", "user:pw@127.0.0.1:2379"}, "-etcd-endpoints:"},
		{[]string{"-registry", "etcd", "-meta", "weight=heavy"}, "weight"},
		{[]string{"-port", "0"}, "-port"},
		{[]string{"-address", "web.internal"}, "-address"},
	} {
		var stdout, stderr strings.Builder
		code := Command(context.Background(), append(append(append([]string{}, base...), c.args...), "--", "true"), &stdout, &stderr, func(string) string { return "" })
		if code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, stderr.String(), c.want)
		}
		if strings.Contains(stderr.String(), "s3cret") {
			t.Errorf("%v: stderr shows the secret: %q", c.args, stderr.String())
		}
	}
	var stdout, stderr strings.Builder
	if code := Command(context.Background(), []string{"-h"}, &stdout, &stderr, func(string) string { return "" }); code != 0 ||
		!strings.Contains(stderr.String(), "Usage: swallowkeeper register") || !strings.Contains(stderr.String(), "-zookeeper-layout") {
		t.Errorf("-h: exit %d, stderr %q; want 0 and the usage", code, stderr.String())
	}
}
