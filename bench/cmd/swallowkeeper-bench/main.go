// Command swallowkeeper-bench compares SwallowKeeper (Lua dyups and reload
// mode) with consul-template on loopback and writes docs/BENCHMARKS.md.
// scripts/bench.sh builds what it needs and runs it.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/swallowkeeper/swallowkeeper/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := bench.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
