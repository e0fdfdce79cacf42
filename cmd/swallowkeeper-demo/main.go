// Command swallowkeeper-demo runs SwallowKeeper live on loopback: Consul,
// nginx with the Lua module, three backends, the daemon and a stream of
// requests. scripts/demo.sh installs what is missing and runs it.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/swallowkeeper/swallowkeeper/internal/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := demo.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
