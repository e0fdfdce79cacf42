package wrapper

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

func TestZooKeeperEntryIsCuratorJSON(t *testing.T) {
	o := Options{Service: "web", ID: "web-1", Address: "10.0.0.1", Port: 8080, Tags: []string{"gray=b"}, Meta: map[string]string{"weight": "3"}}
	path, data, err := (&ZooKeeper{Root: "/sd/"}).Entry(o)
	if err != nil {
		t.Fatal(err)
	}
	if path != "/sd/web/web-1" {
		t.Errorf("path %q", path)
	}
	var got struct {
		Name, ID, Address string
		Port              int
		Payload           struct {
			Metadata map[string]string
		}
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if got.Name != "web" || got.ID != "web-1" || got.Address != "10.0.0.1" || got.Port != 8080 ||
		got.Payload.Metadata["gray"] != "b" || got.Payload.Metadata["weight"] != "3" || got.Payload.Metadata["instance_status"] != "UP" {
		t.Errorf("entry %s", data)
	}
	o.Address = ""
	if _, _, err := (&ZooKeeper{}).Entry(o); err == nil {
		t.Error("an entry without an address was accepted: ZooKeeper has no agent to fill it in")
	}
}

func TestParseZooKeeperAuthNeverQuotesTheSecret(t *testing.T) {
	for _, c := range []struct{ in, scheme, cred, err string }{
		{in: "digest:sk:s3cret-pw", scheme: "digest", cred: "sk:s3cret-pw"},
		{in: " digest:sk:pw:with:colons\n", scheme: "digest", cred: "sk:pw:with:colons"},
		{in: "s3cret-pw", err: "want <scheme>:<credentials>"},
		{in: "digest:s3cret-pw", err: "digest wants user:password"},
		{in: ":s3cret-pw", err: "want <scheme>:<credentials>"},
	} {
		scheme, cred, err := ParseZooKeeperAuth(config.Secret(c.in))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("%q: err = %v, want %q without the secret", c.in, err, c.err)
			}
			continue
		}
		if err != nil || scheme != c.scheme || string(cred) != c.cred {
			t.Errorf("%q: %q %q %v", c.in, scheme, cred, err)
		}
	}
}

// TestZooKeeperAuthKeepsOthersFromTheInstance: with -zookeeper-auth the
// instance znode and the parents the wrapper creates carry the creator's
// digest identity (all permissions) and world read; a client without
// credentials can read the instance (as the daemon does) but can neither
// change nor delete it, nor add a fake instance beside it. Another
// wrapper with the same credentials can.
func TestZooKeeperAuthKeepsOthersFromTheInstance(t *testing.T) {
	z := testenv.StartZooKeeper(t)
	logs := newLogRecorder()
	reg := &ZooKeeper{Servers: []string{z.Addr()}, SessionTimeout: 4 * time.Second, Auth: "digest:sk:s3cret-pw", Log: logs.logger()}
	o := Options{Service: "web", ID: "web-1", Address: "10.0.0.1", Port: 8080}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := reg.Register(ctx, o); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Deregister(context.Background(), o.ID) })
	path := "/services/web/web-1"

	anon := z.Connect(t, 4*time.Second)
	if _, _, err := anon.Get(path); err != nil {
		t.Fatalf("an unauthenticated reader (the daemon) cannot read the instance: %v", err)
	}
	for _, p := range []string{"/services", "/services/web", path} {
		acl, _, err := anon.GetACL(p)
		if err != nil {
			t.Fatal(err)
		}
		// ZooKeeper 3.6+ shows the digest as "x" to other clients.
		if len(acl) != 2 || acl[0].Perms != zk.PermAll || acl[0].Scheme != "digest" || !strings.HasPrefix(acl[0].ID, "sk:") ||
			acl[1] != (zk.ACL{Perms: zk.PermRead, Scheme: "world", ID: "anyone"}) {
			t.Errorf("ACL of %s = %+v, want digest sk:… with cdrwa and world read", p, acl)
		}
	}
	if _, err := anon.Set(path, []byte(`{"address":"169.254.169.254"}`), -1); !errors.Is(err, zk.ErrNoAuth) {
		t.Errorf("unauthenticated set of the instance: %v, want not authenticated", err)
	}
	if err := anon.Delete(path, -1); !errors.Is(err, zk.ErrNoAuth) {
		t.Errorf("unauthenticated delete of the instance: %v, want not authenticated", err)
	}
	if _, err := anon.Create("/services/web/fake", []byte(`{}`), zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); !errors.Is(err, zk.ErrNoAuth) {
		t.Errorf("unauthenticated create beside the instance: %v, want not authenticated", err)
	}
	if _, err := anon.Create("/services/evil", nil, 0, zk.WorldACL(zk.PermAll)); !errors.Is(err, zk.ErrNoAuth) {
		t.Errorf("unauthenticated create of a service under the root: %v, want not authenticated", err)
	}
	if _, _, err := anon.Get(path); err != nil {
		t.Errorf("the instance is gone after the attempts: %v", err)
	}
	if strings.Contains(logs.String(), "s3cret") {
		t.Errorf("the log shows the secret:\n%s", logs)
	}

	// A second wrapper with the same credentials registers beside it.
	reg2 := &ZooKeeper{Servers: []string{z.Addr()}, SessionTimeout: 4 * time.Second, Auth: "digest:sk:s3cret-pw", Log: logs.logger()}
	o2 := o
	o2.ID, o2.Port = "web-2", 8081
	if err := reg2.Register(ctx, o2); err != nil {
		t.Fatalf("a second wrapper with the same credentials: %v", err)
	}
	if err := reg2.Deregister(ctx, o2.ID); err != nil {
		t.Fatal(err)
	}
	if err := reg.Deregister(ctx, o.ID); err != nil {
		t.Fatal(err)
	}
	if ok, _, _ := anon.Exists(path); ok {
		t.Error("the instance is still there after Deregister")
	}
}

// TestZooKeeperWarnsAboutAnOpenParent: when the service's znode already
// exists world-writable, ZooKeeper lets anyone delete its children, ACL or
// not; the wrapper says so.
func TestZooKeeperWarnsAboutAnOpenParent(t *testing.T) {
	z := testenv.StartZooKeeper(t)
	anon := z.Connect(t, 4*time.Second)
	for _, p := range []string{"/services", "/services/web"} {
		if _, err := anon.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
	}
	logs := newLogRecorder()
	reg := &ZooKeeper{Servers: []string{z.Addr()}, SessionTimeout: 4 * time.Second, Auth: "digest:sk:pw", Log: logs.logger()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o := Options{Service: "web", ID: "web-1", Address: "10.0.0.1", Port: 8080}
	if err := reg.Register(ctx, o); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Deregister(context.Background(), o.ID) })
	logs.wait(t, "the parent znode lets anyone create and delete children", time.Second)
	// What the warning is about:
	if err := anon.Delete("/services/web/web-1", -1); err != nil {
		t.Logf("delete under an open parent: %v", err)
	} else {
		t.Log("an unauthenticated client deleted the instance under the open parent, as warned")
	}
}

// TestZooKeeperWithoutAuthSaysTheZnodeIsOpen: without credentials the
// znodes stay world-writable (Curator's default) and the wrapper warns.
func TestZooKeeperWithoutAuthSaysTheZnodeIsOpen(t *testing.T) {
	z := testenv.StartZooKeeper(t)
	logs := newLogRecorder()
	reg := &ZooKeeper{Servers: []string{z.Addr()}, SessionTimeout: 4 * time.Second, Log: logs.logger()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o := Options{Service: "web", ID: "web-1", Address: "10.0.0.1", Port: 8080}
	if err := reg.Register(ctx, o); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Deregister(context.Background(), o.ID) })
	logs.wait(t, "the instance's znode is world-writable", time.Second)
	acl, _, err := z.Connect(t, 4*time.Second).GetACL("/services/web/web-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(acl) != 1 || acl[0] != zk.WorldACL(zk.PermAll)[0] {
		t.Errorf("ACL %+v, want world cdrwa", acl)
	}
}
