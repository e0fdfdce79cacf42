// Command swallowkeeper keeps nginx upstreams in step with a service
// registry. See internal/cli for the commands.
package main

import (
	"context"
	"io"
	"os"

	"github.com/swallowkeeper/swallowkeeper/internal/cli"
	"github.com/swallowkeeper/swallowkeeper/internal/cmdmain"
)

func main() {
	cmdmain.Run(func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
		return cli.Run(ctx, args, stdout, stderr, os.Getenv)
	})
}
