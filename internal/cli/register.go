package cli

import (
	"context"
	"io"

	"github.com/swallowkeeper/swallowkeeper/internal/wrapper"
)

// registerCmd is the register command, which package wrapper implements.
func registerCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	return wrapper.Command(ctx, args, stdout, stderr, getenv)
}
