// Package zkdial holds the ZooKeeper dialer that bounds the session
// handshake, shared by the ZooKeeper source, the register wrapper and the
// test servers.
package zkdial

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"
)

// Bounded dials like the zk client does, but bounds the session
// handshake by limit. go-zookeeper waits ten receive timeouts (about 6.7
// session timeouts) for a server to answer the handshake, and a server that
// is still starting after a restart can accept a connection and never
// answer: the source would stay blind for a minute. The Java client bounds
// the handshake by the session timeout; so does this. Only the first read
// and write deadlines, the handshake's, are bounded: later ones follow the
// negotiated timeout, which the server may have raised.
func Bounded(limit time.Duration) zk.Dialer {
	return func(network, addr string, timeout time.Duration) (net.Conn, error) {
		c, err := net.DialTimeout(network, addr, timeout)
		if err != nil {
			return nil, err
		}
		return &handshakeConn{Conn: c, limit: limit}, nil
	}
}

type handshakeConn struct {
	net.Conn
	limit             time.Duration
	readSet, writeSet atomic.Bool
}

func (c *handshakeConn) bound(t time.Time, done *atomic.Bool) time.Time {
	if t.IsZero() || done.Swap(true) {
		return t
	}
	if lim := time.Now().Add(c.limit); t.After(lim) {
		return lim
	}
	return t
}

func (c *handshakeConn) SetReadDeadline(t time.Time) error {
	return c.Conn.SetReadDeadline(c.bound(t, &c.readSet))
}

func (c *handshakeConn) SetWriteDeadline(t time.Time) error {
	return c.Conn.SetWriteDeadline(c.bound(t, &c.writeSet))
}
