package drain

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// TestWatchCuesWhenTheFileTurnsReadable: chmod and chown change none of
// the stamp's fields (inode, size, mtime), so a marks file made readable
// again would go unseen and its "unreadable" hold would stay until the
// file is rewritten. Watch looks at readability too. (Tests run as root,
// who reads any file whatever its mode: readability is switched here.)
func TestWatchCuesWhenTheFileTurnsReadable(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".upstreams.conf.drains.json")
	if err := os.WriteFile(path, []byte(`{"drains":[]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var ok atomic.Bool
	f := &File{Path: path, Poll: 5 * time.Millisecond, canRead: func(string) bool { return ok.Load() }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cues := make(chan struct{})
	go f.Watch(ctx, cues)
	<-cues // the first cue, at start
	select {
	case <-cues:
		t.Fatal("a cue while nothing changed")
	case <-time.After(50 * time.Millisecond): // 10 polls saw no change
	}
	ok.Store(true)
	select {
	case <-cues:
	case <-time.After(5 * time.Second):
		t.Fatal("no cue within 5s of the marks file turning readable")
	}
}
