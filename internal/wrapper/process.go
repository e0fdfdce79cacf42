package wrapper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

// The app runs in a process group of its own (its pgid is its pid), so
// that every signal the wrapper sends reaches whatever the app started too
// (a shell script's server, a pre-fork master's workers), and so that a
// terminal's Ctrl-C reaches the wrapper alone, which stops the app in
// order. Pdeathsig kills the app when the wrapper dies, even by SIGKILL:
// an orphaned app would keep answering its check and stay registered.

// forwarded are the signals passed on to the app's group at once; the
// wrapper itself goes on (if the app exits because of one, the wrapper
// deregisters at once, as for any exit).
var forwarded = []os.Signal{syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// startApp starts cmd in its own process group with Pdeathsig SIGKILL and
// returns a channel that gets its exit code. Linux sends the parent-death
// signal when the thread that forked the child ends, not the process, so
// the fork happens on a goroutine locked to its thread, which stays
// locked until the app is gone.
func startApp(cmd *exec.Cmd) (<-chan int, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	exited := make(chan int, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited <- exitCode(cmd.Wait())
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return exited, nil
}

// signalGroup sends sig to the app's process group (falling back to the
// app alone if the group is gone).
func signalGroup(cmd *exec.Cmd, sig syscall.Signal) error {
	if err := syscall.Kill(-cmd.Process.Pid, sig); err == nil || !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return cmd.Process.Signal(sig)
}

// endGroup ends what is left of the app's process group once the app
// itself has exited: a child it started and did not stop would keep the
// port (and answer the check) with no wrapper to deregister it. It sends
// sig (0: none, the group already had the stop signal), waits up to grace
// for the group to empty, then SIGKILLs it.
func endGroup(cmd *exec.Cmd, sig syscall.Signal, grace time.Duration, log *slog.Logger) {
	pgid := cmd.Process.Pid
	if syscall.Kill(-pgid, 0) != nil {
		return // nothing left (ESRCH)
	}
	log.Info("the app exited but left processes in its group; waiting for them", "pgid", pgid, "signal", sig.String(), "grace", grace)
	if sig != 0 {
		syscall.Kill(-pgid, sig)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if syscall.Kill(-pgid, 0) != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	log.Warn("processes of the app's group outlived it; killing them", "pgid", pgid)
	syscall.Kill(-pgid, syscall.SIGKILL)
}

// portInUse reports whether something already listens on port (any
// address): the wrapper then refuses to start a second app there. Other
// bind errors (a privileged port, say) say nothing and are ignored.
func portInUse(port int) error {
	for _, network := range []string{"tcp4", "tcp6"} {
		ln, err := net.Listen(network, net.JoinHostPort("", strconv.Itoa(port)))
		if err == nil {
			ln.Close()
			continue
		}
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("port %d is already in use: %w", port, err)
		}
	}
	return nil
}

// reapOrphans reaps processes that end up as the wrapper's children
// without being its app: when the wrapper is PID 1 in a container (or a
// child subreaper), every orphan of the app's tree is reparented to it,
// and nobody else would wait for them. It leaves the app to cmd.Wait: it
// only peeks at an exited child (WNOWAIT) and reaps it if it is not the
// app. It runs until ctx ends.
func reapOrphans(ctx context.Context, appPID int, log *slog.Logger) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGCHLD)
	defer signal.Stop(ch)
	for {
		for {
			pid, err := exitedChild()
			if err != nil || pid <= 0 || pid == appPID {
				break // none, or the app's own exit (cmd.Wait reaps it)
			}
			var ws syscall.WaitStatus
			if got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); err == nil && got == pid {
				log.Info("reaped an orphaned process", "pid", pid, "status", exitStatus(ws))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// exitedChild returns the pid of an exited child that nobody has waited
// for yet, or 0, without reaping it: waitid(P_ALL, WEXITED|WNOHANG|WNOWAIT).
func exitedChild() (int, error) {
	const pAll = 0
	var info [128]byte // siginfo_t
	_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pAll, 0, uintptr(unsafe.Pointer(&info[0])),
		syscall.WEXITED|syscall.WNOHANG|syscall.WNOWAIT, 0, 0)
	if errno != 0 {
		return 0, errno // ECHILD: no children at all
	}
	// si_signo, si_errno, si_code, then the union that starts with si_pid,
	// aligned like a pointer.
	off := 12
	if unsafe.Sizeof(uintptr(0)) == 8 {
		off = 16
	}
	return int(*(*int32)(unsafe.Pointer(&info[off]))), nil
}

func exitStatus(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return "exit " + strconv.Itoa(ws.ExitStatus())
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return 1
}
