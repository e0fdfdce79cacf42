package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/daemon"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/dyups"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/splits"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// oneShotLog is the sources' logger in one-shot commands (unless
// -log-level debug). A registry that cannot be reached gives one error
// that says why, instead of a line per retry: it prints no warning and
// remembers the last one. Registry entries dropped as invalid are the
// exception: an operator asking why render leaves a service out needs the
// reason, so the first drop of each service is passed on to the command's
// logger, up to maxShownDrops, and the rest are counted (see summary).
type oneShotLog struct {
	st   *oneShotState
	pass slog.Handler // the command's logger, with this logger's attributes
}

type oneShotState struct {
	mu     sync.Mutex
	last   string          // the last warning: its error, else its message
	shown  int             // drops passed on
	hidden int             // drops not passed on
	seen   map[string]bool // services with a drop passed on
}

// maxShownDrops bounds the drop lines of a one-shot command, so that a
// big catalog with many invalid entries does not flood the terminal.
const maxShownDrops = 10

func newOneShotLog(pass slog.Handler) *oneShotLog {
	return &oneShotLog{st: &oneShotState{seen: map[string]bool{}}, pass: pass}
}

func (l *oneShotLog) Enabled(_ context.Context, level slog.Level) bool {
	return level >= slog.LevelWarn
}

func (l *oneShotLog) Handle(ctx context.Context, r slog.Record) error {
	var service, errText string
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "service":
			service = a.Value.String()
		case "err":
			errText = errorText(a.Value)
		}
		return true
	})
	st := l.st
	if isDrop(r.Message) {
		st.mu.Lock()
		show := st.shown < maxShownDrops && (service == "" || !st.seen[service])
		if show {
			st.shown++
			st.seen[service] = true
		} else {
			st.hidden++
		}
		st.mu.Unlock()
		if show && l.pass.Enabled(ctx, r.Level) {
			return l.pass.Handle(ctx, r)
		}
		return nil
	}
	if errText == "" {
		errText = r.Message
	}
	st.mu.Lock()
	st.last = errText
	st.mu.Unlock()
	return nil
}

func (l *oneShotLog) WithAttrs(as []slog.Attr) slog.Handler {
	return &oneShotLog{st: l.st, pass: l.pass.WithAttrs(as)}
}

func (l *oneShotLog) WithGroup(name string) slog.Handler {
	return &oneShotLog{st: l.st, pass: l.pass.WithGroup(name)}
}

// isDrop reports whether a source's message is about a registry entry
// dropped as invalid ("invalid instance dropped", "invalid key dropped",
// "invalid znode dropped").
func isDrop(msg string) bool {
	return strings.HasPrefix(msg, "invalid ") && strings.HasSuffix(msg, " dropped")
}

// errorText is a logged error as an operator needs it: an HTTP client's
// error without its `Get "URL":` prefix (the registry is named already).
func errorText(v slog.Value) string {
	if err, ok := v.Any().(error); ok {
		if ue, ok := err.(*url.Error); ok {
			return ue.Err.Error()
		}
		return err.Error()
	}
	return v.String()
}

// lastWarning is the last warning a source logged ("" when none or when
// l is nil: -log-level debug printed them all).
func (l *oneShotLog) lastWarning() string {
	if l == nil {
		return ""
	}
	l.st.mu.Lock()
	defer l.st.mu.Unlock()
	return l.st.last
}

// summary logs how many drops were not shown, if any.
func (l *oneShotLog) summary(log *slog.Logger) {
	if l == nil {
		return
	}
	l.st.mu.Lock()
	hidden := l.st.hidden
	l.st.mu.Unlock()
	if hidden > 0 {
		log.Warn("more invalid registry entries dropped", "count", hidden, "hint", "-log-level debug logs each, and the daemon lists them in /status")
	}
}

// oneShot runs render (print the file the registry gives now, or with
// -diff what would change in the persisted file) or once (one full sync:
// registry → file → nginx) through the engine. differs is true when
// render -diff found a change.
//
// The source's retry warnings are not printed (unless -log-level debug):
// a one-shot command that cannot reach the registry fails once, within
// -timeout, with the last error the source saw.
func oneShot(ctx context.Context, cmd string, cfg *config.Config, opts *flagValues, log *slog.Logger, stdout io.Writer) (differs bool, err error) {
	var quiet *oneShotLog
	srcLog := log
	if level, _ := config.ParseLevel(cfg.Log.Level); level > slog.LevelDebug {
		quiet = newOneShotLog(log.Handler())
		srcLog = slog.New(quiet)
		defer quiet.summary(log)
	}
	if cmd == "once" { // it writes the file: not while a daemon does
		lock, err := daemon.LockStore(cfg.File, log)
		if err != nil {
			return false, err
		}
		defer lock.Release()
	}
	e, err := daemon.OneShot(cfg, log, srcLog, cmd == "render")
	if err != nil {
		return false, err
	}
	cause := fmt.Errorf("%s: no complete answer within %s", daemon.SourceAddr(cfg), opts.timeout)
	ctx, cancel := context.WithTimeoutCause(ctx, opts.timeout, cause)
	defer cancel()
	// unreachable replaces the engine's "waiting for the registry" error
	// with one that names the registry and says why it did not answer.
	unreachable := func(err error) error {
		if !errors.Is(err, cause) {
			return err
		}
		if last := quiet.lastWarning(); last != "" {
			return fmt.Errorf("%s: unreachable after %s: %s", daemon.SourceAddr(cfg), opts.timeout, last)
		}
		return cause
	}
	if cmd == "render" {
		prev, next, _, err := e.Desired(ctx)
		if err != nil {
			return false, unreachable(err)
		}
		if !opts.diff {
			_, err = stdout.Write(upstream.RenderFile(next))
			return false, err
		}
		d := diffStates(prev, next)
		if d == "" {
			fmt.Fprintf(stdout, "no change: %s matches the registry (%s)\n", cfg.File, plural(len(next), "upstream"))
			return false, nil
		}
		fmt.Fprintf(stdout, "--- %s (persisted)\n+++ %s (rendered)\n%s", cfg.File, daemon.SourceAddr(cfg), d)
		return true, nil
	}
	next, err := e.Once(ctx)
	if err != nil {
		return false, targetHints(cfg, unreachable(err))
	}
	fmt.Fprintln(stdout, synced(cfg, len(next), e.SinkStatuses()))
	return false, nil
}

// targetHints adds to each dyups target's error that could not connect
// which target it is in the configuration and what to check: a newcomer's
// first `once` usually fails because nginx is not running or the socket
// path differs.
func targetHints(cfg *config.Config, err error) error {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	hinted := false
	for i, e := range errs {
		var op *net.OpError
		if !errors.As(e, &op) || op.Op != "dial" {
			continue
		}
		for n, t := range cfg.Targets {
			base, perr := dyups.ParseBaseURL(t.URL)
			if perr == nil && strings.HasPrefix(e.Error(), "dyups "+base.String()+":") {
				field := fmt.Sprintf("targets[%d].url", n)
				if where := strings.TrimSuffix(cfg.Where(field), ": "+field); where != field {
					field += " (" + where + ")"
				}
				errs[i] = fmt.Errorf("%w (nothing answers at %s: is nginx running with the dyups API, and is the url right?)", e, field)
				hinted = true
				break
			}
		}
	}
	if !hinted {
		return err
	}
	return errors.Join(errs...)
}

// plural is "1 upstream", "2 upstreams".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// synced says what once did: the upstreams it synced to the dyups
// targets, whether it pushed the traffic split rules, the file it wrote
// and the commands that passed it, and in reload mode that nginx was
// reloaded.
func synced(cfg *config.Config, upstreams int, sinks []engine.SinkStatus) string {
	targets, splitRules, splitTargets, reloaded := 0, 0, 0, false
	splitWhy := "no target holds them"
	for _, s := range sinks {
		switch s.Kind {
		case "reload":
			reloaded = true
		case "dyups":
			targets++
		case "splits": // pushes to the dyups targets: not one of its own
			if st, ok := s.Detail.(splits.Status); ok {
				splitRules = len(st.Rules)
				for _, t := range st.Targets {
					switch {
					case t.Pushed:
						splitTargets++
					case t.Note != "":
						splitWhy = t.Note
					case t.LastError != "":
						splitWhy = t.LastError
					}
				}
			}
		}
	}
	msg := "synced " + plural(upstreams, "upstream")
	if targets > 0 || !reloaded {
		msg += " to " + plural(targets, "target")
	}
	switch {
	case splitRules > 0 && splitTargets > 0:
		msg += fmt.Sprintf(", traffic splits to %d", splitTargets)
	case splitRules > 0: // a target without the split API (real dyups), or one that refused them
		msg += ", traffic splits not pushed (" + splitWhy + ")"
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

// blockLines is the upstream's block as the file holds it, without the
// file's header (a file-level comment, not part of any upstream).
func blockLines(name string, u upstream.Upstream) []string {
	text := strings.TrimPrefix(string(upstream.RenderFile(upstream.State{name: u})), upstream.FileHeader)
	return strings.Split(strings.Trim(text, "\n"), "\n")
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
