package cli

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/daemon"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// lastError is the source's logger in one-shot commands: it prints nothing
// and remembers the last warning, so that a registry that cannot be
// reached gives one error that says why, instead of a line per retry.
type lastError struct {
	mu  sync.Mutex
	msg string
}

func (l *lastError) Enabled(_ context.Context, level slog.Level) bool { return level >= slog.LevelWarn }

func (l *lastError) Handle(_ context.Context, r slog.Record) error {
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			msg += ": " + a.Value.String()
			return false
		}
		return true
	})
	l.mu.Lock()
	l.msg = msg
	l.mu.Unlock()
	return nil
}

func (l *lastError) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *lastError) WithGroup(string) slog.Handler      { return l }

// explain adds the last warning the source logged to err.
func (l *lastError) explain(err error) error {
	if l == nil {
		return err
	}
	l.mu.Lock()
	msg := l.msg
	l.mu.Unlock()
	if msg == "" {
		return err
	}
	return fmt.Errorf("%w; last registry error: %s", err, msg)
}

// synced says what once did: the upstreams it synced to the dyups
// targets, the file it wrote and the commands that passed it, and in
// reload mode that nginx was reloaded.
func synced(cfg *config.Config, upstreams int, sinks []engine.SinkStatus) string {
	targets, reloaded := 0, false
	for _, s := range sinks {
		if s.Kind == "reload" {
			reloaded = true
		} else {
			targets++
		}
	}
	msg := fmt.Sprintf("synced %d upstreams", upstreams)
	if targets > 0 || !reloaded {
		msg += fmt.Sprintf(" to %d target(s)", targets)
	}
	msg += "; file " + cfg.File
	verify := daemon.VerifyCommands(cfg)
	if len(verify) == 0 && !reloaded {
		return msg
	}
	msg += " written"
	for _, argv := range verify {
		msg += ", " + strings.Join(argv, " ") + " ok"
	}
	if reloaded {
		msg += ", nginx reloaded (" + strings.Join(cfg.Reload.Command, " ") + ")"
	}
	return msg
}

// diffStates shows how next differs from prev as a unified-style diff of
// the rendered file, one hunk per upstream that changes ("" when none).
func diffStates(prev, next upstream.State) string {
	c := upstream.Diff(prev, next)
	names := append(c.Set, c.Removed...)
	slices.Sort(names)
	var b strings.Builder
	for _, name := range names {
		o, inOld := prev[name]
		n, inNew := next[name]
		var ol, nl []string
		if inOld {
			ol = blockLines(name, o)
		}
		if inNew {
			nl = blockLines(name, n)
		}
		fmt.Fprintf(&b, "@@ upstream %s @@\n", name)
		for _, l := range diffLines(ol, nl) {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func blockLines(name string, u upstream.Upstream) []string {
	text := strings.TrimRight(string(upstream.RenderFile(upstream.State{name: u})), "\n")
	return strings.Split(text, "\n")
}

// diffLines is a longest-common-subsequence line diff of one upstream
// block (tens of lines): " " kept, "-" removed, "+" added.
func diffLines(a, b []string) []string {
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []string
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			out = append(out, " "+a[i])
			i, j = i+1, j+1
		case i < len(a) && (j == len(b) || lcs[i+1][j] >= lcs[i][j+1]):
			out = append(out, "-"+a[i])
			i++
		default:
			out = append(out, "+"+b[j])
			j++
		}
	}
	return out
}
