package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"github.com/swallowkeeper/swallowkeeper/internal/httpapi"
)

// listener is the daemon's HTTP listener: it serves h until closed, and
// moves only when metrics.listen changes.
type listener struct {
	h      http.Handler
	addr   string // configured; "" when off
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// move makes the listener serve addr ("" stops it). A new address is
// opened before the old one closes; when it cannot be opened the old one
// keeps serving and move returns the error.
func (l *listener) move(ctx context.Context, addr string, pprof bool, log *slog.Logger) error {
	if addr == l.addr && (addr == "" || l.cancel != nil) {
		return nil
	}
	var ln net.Listener
	if addr != "" {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	l.close()
	l.addr = addr
	if ln == nil {
		return nil
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.cancel = cancel
	l.wg.Go(func() { httpapi.Serve(sctx, ln, l.h) })
	log.Info("metrics listening", "addr", ln.Addr().String(), "pprof", pprof)
	return nil
}

func (l *listener) close() {
	if l.cancel != nil {
		l.cancel()
		l.wg.Wait()
		l.cancel = nil
	}
}
