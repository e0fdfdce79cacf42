package testenv

import (
	"syscall"
	"testing"
)

// Pause stops the member with SIGSTOP: it keeps its connections open and
// answers nothing, as a hung or partitioned server does, until Resume. A
// paused member is still killed at the end of the test.
func (e *Etcd) Pause(t testing.TB) {
	t.Helper()
	e.signal(t, syscall.SIGSTOP)
}

// Resume continues a paused member (SIGCONT).
func (e *Etcd) Resume(t testing.TB) {
	t.Helper()
	e.signal(t, syscall.SIGCONT)
}

func (e *Etcd) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if e.cmd == nil || e.cmd.Process == nil {
		t.Fatalf("testenv: etcd is not running (%v)", sig)
	}
	if err := syscall.Kill(-e.cmd.Process.Pid, sig); err != nil {
		t.Fatalf("testenv: etcd: %v: %v", sig, err)
	}
}
