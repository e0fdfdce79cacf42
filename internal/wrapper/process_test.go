package wrapper

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// TestMain lets the test binary play the wrapper, the app and the app's
// child when re-executed (SK_REGISTER_ROLE), so that signals, process
// groups and parent death are real.
func TestMain(m *testing.M) {
	switch os.Getenv("SK_REGISTER_ROLE") {
	case "wrapper":
		os.Exit(roleWrapper())
	case "app":
		os.Exit(roleApp())
	case "grandchild":
		os.Exit(roleGrandchild())
	}
	os.Exit(m.Run())
}

// roleWrapper runs Run with a registrar that appends to $SK_REG_FILE.
func roleWrapper() int {
	if os.Getenv("SK_SUBREAPER") == "1" {
		// What being PID 1 in a container means for orphans, without a
		// PID namespace: they are reparented to this process.
		const prSetChildSubreaper = 36
		if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
			fmt.Fprintln(os.Stderr, "prctl:", errno)
			return 3
		}
	}
	port, _ := strconv.Atoi(os.Getenv("SK_PORT"))
	o := Options{Service: "web", ID: "web-1", Address: "10.0.0.1", Port: port,
		StopSignal: syscall.SIGTERM, StopTimeout: 5 * time.Second, Reap: os.Getenv("SK_REAP") == "1"}
	if err := o.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	self, _ := os.Executable()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	argv := []string{"/usr/bin/env", "SK_REGISTER_ROLE=app", self}
	return Run(context.Background(), o, argv, fileRegistrar(os.Getenv("SK_REG_FILE")), log, os.Stdout, os.Stderr)
}

type fileRegistrar string

func (f fileRegistrar) note(s string) error {
	fh, err := os.OpenFile(string(f), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer fh.Close()
	_, err = fmt.Fprintln(fh, s)
	return err
}
func (f fileRegistrar) Register(_ context.Context, o Options) error {
	return f.note("register " + o.ID)
}
func (f fileRegistrar) Deregister(_ context.Context, id string) error {
	return f.note("deregister " + id)
}

// roleApp prints what happens to it on stdout; TERM ends it at once
// (without passing anything on to its own child).
func roleApp() int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGTERM)
	if os.Getenv("SK_GRANDCHILD") == "1" {
		self, _ := os.Executable()
		gc := exec.Command(self)
		gc.Env = append(os.Environ(), "SK_REGISTER_ROLE=grandchild")
		gc.Stdout, gc.Stderr = os.Stdout, os.Stderr
		if err := gc.Start(); err != nil {
			fmt.Println("app: grandchild:", err)
			return 1
		}
		fmt.Printf("grandchild pid=%d\n", gc.Process.Pid)
	}
	if os.Getenv("SK_ORPHAN") == "1" {
		// sh starts sleep in the background and exits: sleep is orphaned.
		if err := exec.Command("/bin/sh", "-c", "sleep 0.3 &").Run(); err != nil {
			fmt.Println("app: orphan:", err)
			return 1
		}
		fmt.Println("orphan started")
	}
	if _, ok := os.LookupEnv(ZooKeeperAuthEnv); ok {
		fmt.Println("app sees the zookeeper credentials")
	}
	fmt.Printf("app ready pid=%d\n", os.Getpid())
	for sig := range sigs {
		switch sig {
		case syscall.SIGHUP:
			fmt.Println("app got hangup")
		case syscall.SIGQUIT:
			fmt.Println("app got quit")
		case syscall.SIGTERM:
			fmt.Println("app got terminated")
			return 0
		}
	}
	return 0
}

// roleGrandchild writes to $SK_GC_FILE when it gets SIGTERM.
func roleGrandchild() int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	fmt.Println("grandchild ready")
	<-sigs
	os.WriteFile(os.Getenv("SK_GC_FILE"), []byte("grandchild got terminated\n"), 0o644)
	return 0
}

// syncBuffer collects a process's output; wait waits for a line.
type syncBuffer struct {
	mu      sync.Mutex
	b       strings.Builder
	changed chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{})} }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.changed)
	s.changed = make(chan struct{})
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// wait returns the first line containing sub, waiting at most timeout.
func (s *syncBuffer) wait(t *testing.T, sub string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		text, changed := s.b.String(), s.changed
		s.mu.Unlock()
		for _, l := range strings.Split(text, "\n") {
			if strings.Contains(l, sub) {
				return l
			}
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no line %q within %v; output:\n%s", sub, timeout, text)
		}
	}
}

type wrapperProc struct {
	mu      sync.Mutex
	pids    []int // the app's and its child's, killed at the end in any case
	cmd     *exec.Cmd
	out     *syncBuffer
	exited  chan struct{}
	err     error
	regFile string
}

// startWrapperProc starts the test binary as a wrapper of the test binary
// as an app, with extra environment.
func startWrapperProc(t *testing.T, env ...string) *wrapperProc {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	w := &wrapperProc{out: newSyncBuffer(), exited: make(chan struct{}), regFile: filepath.Join(t.TempDir(), "registry")}
	w.cmd = exec.Command(self)
	w.cmd.Env = append(os.Environ(), append([]string{"SK_REGISTER_ROLE=wrapper", "SK_PORT=" + strconv.Itoa(testenv.FreePort(t)),
		"SK_REG_FILE=" + w.regFile}, env...)...)
	w.cmd.Stdout, w.cmd.Stderr = w.out, w.out
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A process that outlives the wrapper (what these tests look for)
	// keeps its output pipe open: do not wait for it.
	w.cmd.WaitDelay = 500 * time.Millisecond
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.err = w.cmd.Wait(); close(w.exited) }()
	t.Cleanup(func() {
		w.cmd.Process.Kill()
		<-w.exited
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, pid := range w.pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return w
}

// pid parses "pid=N" from the first output line containing sub, and
// remembers it to kill at the end of the test.
func (w *wrapperProc) pid(t *testing.T, sub string) int {
	t.Helper()
	pid := pidIn(t, w.out.wait(t, sub, 10*time.Second))
	w.mu.Lock()
	w.pids = append(w.pids, pid)
	w.mu.Unlock()
	return pid
}

func (w *wrapperProc) waitExit(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-w.exited:
	case <-time.After(timeout):
		t.Fatalf("wrapper still running after %v; output:\n%s", timeout, w.out)
	}
}

func (w *wrapperProc) registry() string {
	b, _ := os.ReadFile(w.regFile)
	return string(b)
}

// pidIn parses "<prefix>pid=N" from a line.
func pidIn(t *testing.T, line string) int {
	t.Helper()
	_, v, _ := strings.Cut(line, "pid=")
	pid, err := strconv.Atoi(strings.Fields(v)[0])
	if err != nil {
		t.Fatalf("no pid in %q", line)
	}
	return pid
}

// procState is a process's state letter (R, S, Z, ...) and parent, or ""
// when it is gone.
func procState(pid int) (state string, ppid int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	ppid, _ = strconv.Atoi(f[1])
	return f[0], ppid
}

// waitGone waits until pid is gone or a zombie (dead, not yet reaped by
// whoever inherited it).
func waitGone(t *testing.T, pid int, timeout time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		st, ppid := procState(pid)
		if st == "" || st == "Z" {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s (pid %d) still alive after %v: state %s, parent %d", what, pid, timeout, st, ppid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStopSignalsTheAppsWholeGroup: on SIGTERM the wrapper signals the
// app's process group, so a child the app started (and does not stop
// itself) gets SIGTERM too instead of being orphaned.
func TestStopSignalsTheAppsWholeGroup(t *testing.T) {
	w := startWrapperProc(t, "SK_GRANDCHILD=1", "SK_GC_FILE="+filepath.Join(t.TempDir(), "gc"))
	gc := w.pid(t, "grandchild pid=")
	w.out.wait(t, "grandchild ready", 10*time.Second)
	w.out.wait(t, "registered", 10*time.Second)
	gcFile := ""
	for _, kv := range w.cmd.Env {
		if v, ok := strings.CutPrefix(kv, "SK_GC_FILE="); ok {
			gcFile = v
		}
	}
	w.cmd.Process.Signal(syscall.SIGTERM)
	w.waitExit(t, 10*time.Second)
	if w.err != nil {
		t.Errorf("wrapper exit %v, want 0 (the app's code); output:\n%s", w.err, w.out)
	}
	waitGone(t, gc, 5*time.Second, "the app's child")
	b, _ := os.ReadFile(gcFile)
	if !strings.Contains(string(b), "grandchild got terminated") {
		t.Errorf("the app's child died without getting SIGTERM (file %q); output:\n%s", b, w.out)
	}
	if got := w.registry(); got != "register web-1\nderegister web-1\n" {
		t.Errorf("registry calls %q", got)
	}
}

// TestWrapperKilledTakesItsAppAlong: SIGKILL the wrapper alone; the app
// dies with it (Pdeathsig), so no orphan keeps answering the check.
func TestWrapperKilledTakesItsAppAlong(t *testing.T) {
	w := startWrapperProc(t)
	app := w.pid(t, "app ready pid=")
	w.out.wait(t, "registered", 10*time.Second)
	if st, ppid := procState(app); st == "" || ppid != w.cmd.Process.Pid {
		t.Fatalf("app %d: state %q parent %d, want a child of the wrapper %d", app, st, ppid, w.cmd.Process.Pid)
	}
	w.cmd.Process.Signal(syscall.SIGKILL)
	took := waitGone(t, app, 5*time.Second, "the app of a wrapper killed with SIGKILL")
	t.Logf("wrapper killed with SIGKILL: its app died %v later", took.Round(time.Millisecond))
}

// TestForwardsHUPAndQUIT: HUP and QUIT reach the app, and the wrapper goes
// on (no deregistration) until the stop signal.
func TestForwardsHUPAndQUIT(t *testing.T) {
	w := startWrapperProc(t)
	w.out.wait(t, "app ready pid=", 10*time.Second)
	w.out.wait(t, "registered", 10*time.Second)
	w.cmd.Process.Signal(syscall.SIGHUP)
	w.out.wait(t, "app got hangup", 5*time.Second)
	w.cmd.Process.Signal(syscall.SIGQUIT)
	w.out.wait(t, "app got quit", 5*time.Second)
	select {
	case <-w.exited:
		t.Fatalf("the wrapper exited after HUP/QUIT: %v; output:\n%s", w.err, w.out)
	default:
	}
	if got := w.registry(); got != "register web-1\n" {
		t.Errorf("registry calls after HUP and QUIT: %q, want the registration alone", got)
	}
	w.cmd.Process.Signal(syscall.SIGTERM)
	w.waitExit(t, 10*time.Second)
	if w.err != nil {
		t.Errorf("wrapper exit %v; output:\n%s", w.err, w.out)
	}
}

// TestReapsOrphansAsInit: a wrapper that is PID 1 (here: a child
// subreaper, which orphans are reparented to in the same way) reaps the
// app's orphans; without Reap they stay zombies.
func TestReapsOrphansAsInit(t *testing.T) {
	t.Run("with Reap the orphan is reaped", func(t *testing.T) {
		w := startWrapperProc(t, "SK_SUBREAPER=1", "SK_REAP=1", "SK_ORPHAN=1")
		w.out.wait(t, "orphan started", 10*time.Second)
		line := w.out.wait(t, "reaped an orphaned process", 10*time.Second)
		t.Log(line)
		if z := zombieChildren(w.cmd.Process.Pid); len(z) > 0 {
			t.Errorf("zombie children of the wrapper after reaping: %v", z)
		}
		w.out.wait(t, "app ready", 5*time.Second)
		w.cmd.Process.Signal(syscall.SIGTERM)
		w.waitExit(t, 10*time.Second)
		if w.err != nil {
			t.Errorf("wrapper exit %v (the app's status must not be lost to the reaper); output:\n%s", w.err, w.out)
		}
	})
	t.Run("without Reap it stays a zombie", func(t *testing.T) {
		w := startWrapperProc(t, "SK_SUBREAPER=1", "SK_ORPHAN=1")
		w.out.wait(t, "orphan started", 10*time.Second)
		start := time.Now()
		for len(zombieChildren(w.cmd.Process.Pid)) == 0 {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("no zombie child of the wrapper within 10s: the test's orphan never reached it; output:\n%s", w.out)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// zombieChildren lists the zombies whose parent is pid.
func zombieChildren(pid int) []int {
	var z []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		p, _ := strconv.Atoi(filepath.Base(d))
		if st, ppid := procState(p); st == "Z" && ppid == pid {
			z = append(z, p)
		}
	}
	return z
}

// TestRefusesToStartOnATakenPort: something already listens on the app's
// port (an orphaned app, a second instance): the wrapper exits 1 without
// starting the app and without touching the registry, whose registration
// under this ID may be the other process's. The same when the check
// already passes before the app started.
func TestRefusesToStartOnATakenPort(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "app-ran")
	argv := []string{"/bin/sh", "-c", "touch " + marker}
	t.Run("port taken", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		o := Options{Service: "web", Address: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, StopSignal: syscall.SIGTERM, StopTimeout: time.Second}
		if err := o.Validate(); err != nil {
			t.Fatal(err)
		}
		reg, logs := &fakeRegistrar{}, newLogRecorder()
		if code := Run(context.Background(), o, argv, reg, logs.logger(), os.Stdout, os.Stderr); code != 1 {
			t.Errorf("exit %d, want 1; log:\n%s", code, logs)
		}
		if r, d := reg.calls(); r != 0 || d != 0 {
			t.Errorf("registry touched: %d registrations, %d deregistrations", r, d)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Error("the app was started")
		}
		logs.wait(t, "already listens on the app's port", 0)
	})
	t.Run("check already passing", func(t *testing.T) {
		other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
		defer other.Close()
		o := Options{Service: "web", Address: "127.0.0.1", Port: testenv.FreePort(t), Check: other.URL + "/health",
			StopSignal: syscall.SIGTERM, StopTimeout: time.Second}
		if err := o.Validate(); err != nil {
			t.Fatal(err)
		}
		reg, logs := &fakeRegistrar{}, newLogRecorder()
		if code := Run(context.Background(), o, argv, reg, logs.logger(), os.Stdout, os.Stderr); code != 1 {
			t.Errorf("exit %d, want 1; log:\n%s", code, logs)
		}
		if r, d := reg.calls(); r != 0 || d != 0 {
			t.Errorf("registry touched: %d registrations, %d deregistrations", r, d)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Error("the app was started")
		}
		logs.wait(t, "the health check already passes before the app started", 0)
	})
}

// The app does not inherit the ZooKeeper credentials that own its znodes.
func TestAppDoesNotInheritZooKeeperCredentials(t *testing.T) {
	w := startWrapperProc(t, ZooKeeperAuthEnv+"=digest:user:secret")
	w.pid(t, "app ready")
	if strings.Contains(w.out.String(), "app sees the zookeeper credentials") {
		t.Fatalf("the app inherited %s; output:\n%s", ZooKeeperAuthEnv, w.out)
	}
	w.cmd.Process.Signal(syscall.SIGTERM)
	w.waitExit(t, 10*time.Second)
}
