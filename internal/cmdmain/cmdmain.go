// Package cmdmain starts and ends every command (swallowkeeper, the demo,
// the bench) alike: a context that SIGINT or SIGTERM cancels, and the exit
// code their Main returns.
package cmdmain

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Main is a command's body; it returns the process's exit code.
type Main func(ctx context.Context, args []string, stdout, stderr io.Writer) int

// Run runs main with the process's arguments and standard output and
// error, then exits with its code.
func Run(main Main) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
