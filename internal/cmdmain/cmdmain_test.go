package cmdmain

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary stand for a command: with
// CMDMAIN_TEST_CHILD set it runs Run with a Main that prints its
// arguments, says it is ready, waits for its context to end and returns 3.
func TestMain(m *testing.M) {
	if os.Getenv("CMDMAIN_TEST_CHILD") == "" {
		os.Exit(m.Run())
	}
	Run(func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
		fmt.Fprintf(stdout, "args %q\nready\n", args)
		<-ctx.Done()
		fmt.Fprintln(stderr, "context ended")
		return 3
	})
}

// SIGTERM ends Main's context, and the process exits with Main's code.
func TestRunEndsTheContextOnSIGTERMAndExitsWithMainsCode(t *testing.T) {
	cmd := exec.Command(os.Args[0], "a", "b")
	cmd.Env = append(os.Environ(), "CMDMAIN_TEST_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(out)
	var first string
	for lines.Scan() {
		if first == "" {
			first = lines.Text()
		}
		if lines.Text() == "ready" {
			break
		}
	}
	if first != `args ["a" "b"]` {
		t.Errorf("Main saw %s, want args [\"a\" \"b\"]", first)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { io.Copy(io.Discard, out); done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the command did not exit within 30s of SIGTERM")
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("exit: %v, want exit status 3 (Main's code after its context ended)", err)
	}
}
