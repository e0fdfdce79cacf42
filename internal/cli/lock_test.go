package cli_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/cli"
	"github.com/swallowkeeper/swallowkeeper/internal/store"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// A second writer of the persisted path (another `run`, or `once`) is
// refused while a daemon writes it, with a message that names the holder
// and the lock file, and leaves the file as the daemon wrote it; once the
// daemon has stopped, `once` writes again. Both the one-file and the
// directory store.
func TestSecondWriterIsRefused(t *testing.T) {
	c := testenv.StartConsul(t)
	b := startBackend(t, "web-1")
	c.Register(t, "web", "web-1", "127.0.0.1", b.Port, nil, nil)

	for _, layout := range []string{"upstreams.conf", "upstreams.d/*.conf"} {
		// An nginx of its own: the first daemon's push must not count as
		// the second's.
		ng := testenv.StartNginx(t, testenv.NginxOptions{})
		file := filepath.Join(t.TempDir(), layout)
		os.MkdirAll(filepath.Dir(file), 0o755)
		written := file
		if store.IsDirGlob(file) {
			written = filepath.Join(filepath.Dir(file), "web.conf")
		}
		conf := writeConfig(t, c, ng, file)
		d := startDaemon(t, "-config", conf)
		waitRoutes(t, ng, d, "web", "web-1")
		before := store.StampOf(written)
		if before == (store.Stamp{}) {
			t.Fatalf("%s: nginx routes to web-1 but %s is not there", layout, written)
		}

		for _, cmd := range []string{"run", "once"} {
			// A run that is not refused would run until its context ends.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			var out, errb bytes.Buffer
			code := cli.Run(ctx, []string{cmd, "-config", conf}, &out, &errb, func(string) string { return "" })
			ended := ctx.Err()
			cancel()
			errs := errb.String()
			if ended != nil {
				t.Fatalf("%s: a second %s beside the daemon ran until its 20s context ended (exit %d); stderr:\n%s", layout, cmd, code, errs)
			}
			if code == 0 {
				t.Fatalf("%s: a second %s beside the daemon exited 0; stderr:\n%s", layout, cmd, errs)
			}
			for _, want := range []string{"another swallowkeeper writes it", "pid " + strconv.Itoa(os.Getpid()), store.LockPath(file)} {
				if !strings.Contains(errs, want) {
					t.Errorf("%s: %s's refusal does not say %q:\n%s", layout, cmd, want, errs)
				}
			}
		}
		if after := store.StampOf(written); after != before {
			t.Errorf("%s: the refused writers changed %s: %+v, then %+v", layout, written, before, after)
		}
		if !d.running() {
			t.Fatalf("%s: the daemon stopped; log:\n%s", layout, d.log.String())
		}

		d.stop(t)
		if code, out, errs := runCLI(t, nil, "once", "-config", conf); code != 0 {
			t.Errorf("%s: once after the daemon stopped: exit %d\nstdout: %s\nstderr: %s", layout, code, out, errs)
		}
	}
}

// A SIGHUP that names another file moves the lock: the new file is
// refused to a second writer, the old one is free again.
func TestReloadMovesTheLock(t *testing.T) {
	c := testenv.StartConsul(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{})
	b := startBackend(t, "web-1")
	c.Register(t, "web", "web-1", "127.0.0.1", b.Port, nil, nil)
	dir := t.TempDir()
	oldFile, newFile := filepath.Join(dir, "old.conf"), filepath.Join(dir, "new.conf")
	conf := writeConfig(t, c, ng, oldFile)

	cmd, d := startDaemonProcess(t, conf)
	waitRoutes(t, ng, d, "web", "web-1")
	onceOn := func(file string) (int, string) {
		code, _, errs := runCLI(t, nil, "once", "-config", conf, "-file", file)
		return code, errs
	}
	if code, errs := onceOn(oldFile); code == 0 || !strings.Contains(errs, "pid "+strconv.Itoa(cmd.Process.Pid)) {
		t.Fatalf("once on the daemon's file: exit %d, stderr %q; want a refusal naming pid %d", code, errs, cmd.Process.Pid)
	}

	moved, err := os.ReadFile(writeConfig(t, c, ng, newFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, moved, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, d, "the persisted file's lock moved with it")
	if code, errs := onceOn(newFile); code == 0 || !strings.Contains(errs, "pid "+strconv.Itoa(cmd.Process.Pid)) {
		t.Errorf("once on the file the daemon moved to: exit %d, stderr %q; want a refusal naming pid %d", code, errs, cmd.Process.Pid)
	}
	if code, errs := onceOn(oldFile); code != 0 {
		t.Errorf("once on the file the daemon left: exit %d, stderr %q; want it free", code, errs)
	}
}
