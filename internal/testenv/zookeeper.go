package testenv

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/swallowkeeper/swallowkeeper/internal/zkdial"
)

// ZooKeeperTick is the tickTime of test servers: sessions may time out after
// 2 to 20 ticks (0.4s to 4s), so expiry tests stay short.
const ZooKeeperTick = 200 * time.Millisecond

// ZooKeeper is a real standalone ZooKeeper server on loopback: Debian's
// zookeeper package (3.8), run by java straight from its jars.
type ZooKeeper struct {
	java, classpath, dir, cfgPath, logPath string
	port                                   int
	process
}

// zooKeeperClasspath is Debian's: the server jar names its dependencies in
// its manifest; slf4j-simple sends the server's log to stderr (our log file).
const zooKeeperClasspath = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"

// StartZooKeeper starts a server with its data under t.TempDir(), so that
// Stop and Start keep znodes and sessions, as a real restart does.
// $ZOOKEEPER_CLASSPATH overrides the classpath, $JAVA the java binary.
func StartZooKeeper(t testing.TB) *ZooKeeper {
	t.Helper()
	z := &ZooKeeper{
		java:      Binary(t, "JAVA", "java", "Debian package default-jre-headless"),
		classpath: zooKeeperClasspath,
		dir:       t.TempDir(),
		port:      FreePort(t),
	}
	if cp := os.Getenv("ZOOKEEPER_CLASSPATH"); cp != "" {
		z.classpath = cp
	}
	jar := strings.Split(z.classpath, ":")[0]
	if _, err := os.Stat(jar); err != nil {
		t.Fatalf("testenv: ZooKeeper jar: %v (Debian package zookeeper; run scripts/test.sh, which installs it)", err)
	}
	z.cfgPath = filepath.Join(z.dir, "zoo.cfg")
	z.logPath = filepath.Join(z.dir, "zookeeper.log")
	cfg := fmt.Sprintf(`tickTime=%d
dataDir=%s
clientPort=%d
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=*
forceSync=no
`, ZooKeeperTick.Milliseconds(), filepath.Join(z.dir, "data"), z.port)
	if err := os.WriteFile(z.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(z.kill)
	z.Start(t)
	return z
}

// Addr is the client address, host:port.
func (z *ZooKeeper) Addr() string { return Addr(z.port) }

// Start (re)starts the server on the same port and data directory and
// waits, at most 30s, until it serves a read.
func (z *ZooKeeper) Start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(z.java,
		"-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
		"-cp", z.classpath,
		"org.apache.zookeeper.server.quorum.QuorumPeerMain", z.cfgPath)
	z.start(t, "zookeeper", cmd, z.logPath, 30*time.Second, z.waitServing)
}

// waitServing waits until the server answers the srvr command as serving
// (a starting server accepts connections before it serves them), then for
// a session and a listing of "/".
func (z *ZooKeeper) waitServing(ctx context.Context) error {
	return retryUntil(ctx, func() error {
		if err := z.probe(ctx); err != nil {
			return err
		}
		conn, err := dial(ctx, z.Addr(), 2*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		_, _, err = conn.Children("/")
		return err
	})
}

// probe asks whether the server serves.
func (z *ZooKeeper) probe(ctx context.Context) error {
	out, err := z.command(ctx, "srvr")
	if err != nil {
		return err
	}
	if !strings.Contains(out, "Mode:") {
		return fmt.Errorf("srvr: %q", strings.TrimSpace(out))
	}
	return nil
}

// FourLetter sends a four-letter command (srvr, wchs, cons, ...; all are
// enabled) and returns the answer.
func (z *ZooKeeper) FourLetter(t testing.TB, cmd string) string {
	t.Helper()
	out, err := z.command(context.Background(), cmd)
	if err != nil {
		t.Fatalf("testenv: zookeeper %s: %v", cmd, err)
	}
	return out
}

func (z *ZooKeeper) command(ctx context.Context, cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", z.Addr())
	if err != nil {
		return "", err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	if _, err := c.Write([]byte(cmd)); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// Stop kills the server (SIGKILL: a crash, not a shutdown).
func (z *ZooKeeper) Stop(t testing.TB) {
	t.Helper()
	z.kill()
}

// Connect opens a client session to the server, as an application would,
// and waits (at most 10s) until the session is up. The client's own log is
// discarded. It is closed at the end of the test.
func (z *ZooKeeper) Connect(t testing.TB, sessionTimeout time.Duration) *zk.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := dial(ctx, z.Addr(), sessionTimeout)
	if err != nil {
		t.Fatalf("testenv: connect to zookeeper %s: %v", z.Addr(), err)
	}
	t.Cleanup(conn.Close)
	return conn
}

// dial connects and waits for a session. Like the source, it bounds the
// session handshake: go-zookeeper would wait ten receive timeouts for a
// server that accepted the connection while starting and never answers.
func dial(ctx context.Context, addr string, sessionTimeout time.Duration) (*zk.Conn, error) {
	conn, events, err := zk.Connect([]string{addr}, sessionTimeout,
		zk.WithDialer(zkdial.Bounded(sessionTimeout)), zk.WithLogger(discard{}), zk.WithLogInfo(false))
	if err != nil {
		return nil, err
	}
	for {
		select {
		case ev := <-events:
			if ev.State == zk.StateHasSession {
				return conn, nil
			}
		case <-ctx.Done():
			conn.Close()
			return nil, fmt.Errorf("no session: %w", ctx.Err())
		}
	}
}

type discard struct{}

func (discard) Printf(string, ...any) {}
