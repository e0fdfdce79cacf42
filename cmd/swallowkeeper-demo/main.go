// Command swallowkeeper-demo runs SwallowKeeper live on loopback: Consul,
// nginx with the Lua module, three backends, the daemon and a stream of
// requests. scripts/demo.sh installs what is missing and runs it.
package main

import (
	"github.com/swallowkeeper/swallowkeeper/internal/cmdmain"
	"github.com/swallowkeeper/swallowkeeper/internal/demo"
)

func main() { cmdmain.Run(demo.Main) }
