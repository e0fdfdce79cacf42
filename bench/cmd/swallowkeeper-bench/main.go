// Command swallowkeeper-bench compares SwallowKeeper (Lua dyups and reload
// mode) with consul-template on loopback and writes docs/BENCHMARKS.md.
// scripts/bench.sh builds what it needs and runs it.
package main

import (
	"github.com/swallowkeeper/swallowkeeper/bench"
	"github.com/swallowkeeper/swallowkeeper/internal/cmdmain"
)

func main() { cmdmain.Run(bench.Main) }
