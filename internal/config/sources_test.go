package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/layout"
	"github.com/swallowkeeper/swallowkeeper/internal/source/zookeeper"
)

// The sources default nothing: the configuration hands them options with
// every default resolved, the layout's prefix included.
func TestSourceOptionsResolveEveryDefault(t *testing.T) {
	c := Default()
	e, err := c.EtcdOptions()
	if err != nil {
		t.Fatal(err)
	}
	if e.Layout != layout.Upsync || e.Prefix != "/upstreams" || e.DialTimeout != 5*time.Second || e.Resync != 10*time.Minute ||
		e.Username != "" || e.Password != "" {
		t.Errorf("etcd options from the defaults: %+v", e)
	}
	c.Etcd.Layout = "service"
	if e, err := c.EtcdOptions(); err != nil || e.Layout != layout.Service || e.Prefix != "/services" {
		t.Errorf("service layout: %+v, %v; want prefix /services", e, err)
	}
	c.Etcd.Prefix = "/sd/"
	if e, err := c.EtcdOptions(); err != nil || e.Prefix != "/sd/" {
		t.Errorf("a prefix set: %+v, %v", e, err)
	}

	z, err := c.ZooKeeperOptions()
	if err != nil {
		t.Fatal(err)
	}
	if z != (zookeeper.Options{Root: "/services", Layout: layout.Curator, SessionTimeout: 10 * time.Second, Resync: 10 * time.Minute}) {
		t.Errorf("zookeeper options from the defaults: %+v", z)
	}
	c.ZooKeeper.Layout = "plain"
	if z, err := c.ZooKeeperOptions(); err != nil || z.Layout != layout.Plain {
		t.Errorf("plain layout: %+v, %v", z, err)
	}
}

// resync: 0 is off for every source: the options carry 0, which the
// sources take as off (etcd used to take it as its own default, 5m).
func TestResyncZeroIsOffForEverySource(t *testing.T) {
	c := Default()
	c.Etcd.Resync, c.ZooKeeper.Resync = 0, 0
	e, err := c.EtcdOptions()
	if err != nil || e.Resync != 0 {
		t.Errorf("etcd resync %v, %v; want 0 (off)", e.Resync, err)
	}
	z, err := c.ZooKeeperOptions()
	if err != nil || z.Resync != 0 {
		t.Errorf("zookeeper resync %v, %v; want 0 (off)", z.Resync, err)
	}
}

// The etcd password is a Secret, as the Consul token is: read from
// password_file and never printed with the options.
func TestEtcdPasswordIsASecret(t *testing.T) {
	c := Default()
	c.Etcd.Username = "swallowkeeper"
	c.Etcd.PasswordFile = filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(c.Etcd.PasswordFile, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e, err := c.EtcdOptions()
	if err != nil {
		t.Fatal(err)
	}
	var password Secret = e.Password // the Consul token's type
	if password.Reveal() != "hunter2" {
		t.Errorf("password %q", password.Reveal())
	}
	for _, printed := range []string{fmt.Sprint(e), fmt.Sprintf("%+v", e), fmt.Sprintf("%#v", e)} {
		if strings.Contains(printed, "hunter2") {
			t.Errorf("the password prints: %s", printed)
		}
	}
	c.Etcd.PasswordFile = filepath.Join(t.TempDir(), "missing")
	if _, err := c.EtcdOptions(); err == nil || !strings.Contains(err.Error(), "etcd.password_file") {
		t.Errorf("a missing password file: %v", err)
	}
}

// Options the sources cannot run with are refused when they are built.
func TestSourceOptionsAreValidated(t *testing.T) {
	c := Default()
	c.Etcd.Prefix = "/a/../b"
	if _, err := c.EtcdOptions(); err == nil || !strings.Contains(err.Error(), "etcd: prefix") {
		t.Errorf("etcd prefix /a/../b: %v", err)
	}
	c.Etcd.Prefix, c.Etcd.Layout = "", "curator"
	if _, err := c.EtcdOptions(); err == nil || err.Error() != `etcd: unknown layout "curator" (want "upsync" or "service")` {
		t.Errorf("etcd layout curator: %v", err)
	}
	c.ZooKeeper.Layout = "upsync"
	if _, err := c.ZooKeeperOptions(); err == nil || err.Error() != `zookeeper: unknown layout "upsync" (want "curator" or "plain")` {
		t.Errorf("zookeeper layout upsync: %v", err)
	}
	c.ZooKeeper.Layout = "curator"
	c.ZooKeeper.Root = "/a//b"
	if _, err := c.ZooKeeperOptions(); err == nil || !strings.Contains(err.Error(), "zookeeper: root") {
		t.Errorf("zookeeper root /a//b: %v", err)
	}
}
