package testenv

import (
	"context"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
)

// process is a test server's process, run in a process group of its own
// that dies with the test binary (Pdeathsig) and that kill ends.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// start runs cmd with its output appended to logPath and waits, at most
// within, until ready reports the server serving. A server that exits
// first, or never serves, fails the test with the tail of its log.
func (p *process) start(t testing.TB, what string, cmd *exec.Cmd, logPath string, within time.Duration, ready func(context.Context) error) {
	t.Helper()
	if p.cmd != nil {
		t.Fatalf("testenv: %s already running", what)
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start %s: %v", what, err)
	}
	p.cmd, p.exited = cmd, make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(cmd, p.exited)

	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	serving := make(chan error, 1)
	go func() { serving <- ready(ctx) }()
	select {
	case err := <-serving:
		if err != nil {
			t.Fatalf("testenv: %s not serving: %v; log %s:\n%s", what, err, logPath, tail(logPath))
		}
	case <-p.exited:
		cancel()
		<-serving
		t.Fatalf("testenv: %s exited at start; log %s:\n%s", what, logPath, tail(logPath))
	}
}

// kill ends the process group with SIGKILL (a crash, not a shutdown) and
// waits for the process; nothing when it does not run.
func (p *process) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
	p.cmd = nil
}

// retryUntil calls try every 50ms until it succeeds or ctx ends; then the
// error says what the last try found.
func retryUntil(ctx context.Context, try func() error) error {
	return backoff.Poll(ctx, 50*time.Millisecond, try)
}
