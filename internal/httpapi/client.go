package httpapi

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/history"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/splits"
	"github.com/swallowkeeper/swallowkeeper/internal/statuspage"
)

// Doc is /status as `swallowkeeper status` and the status page read it:
// the fields every sink has, and those of the kinds they show.
type Doc struct {
	document[Target]
	Reload *Reload `json:"reload,omitempty"` // reload mode only
	// Splits are the traffic split rules and where they are pushed.
	Splits *splits.Status `json:"splits,omitempty"`
}

// Target is a sink's /status entry: the common fields, and a dyups
// target's drift.
type Target struct {
	sinkEntry
	DriftRepairs int      `json:"drift_repairs"`
	Drift        []string `json:"drift,omitempty"`
}

// Reload is what `swallowkeeper status` reads of reload mode's section:
// while a test or reload fails, since when, how often and when it is
// tried again.
type Reload struct {
	Failing        bool      `json:"failing"`
	FailedAttempts int       `json:"failed_attempts"`
	FailingSince   time.Time `json:"failing_since,omitzero"`
	NextRetry      time.Time `json:"next_retry,omitzero"`
}

// failing says, for people, how long reload mode has been failing and when
// it tries again.
func (r *Reload) failing(now time.Time) string {
	msg := fmt.Sprintf("nginx not reloaded for %s, %d failed attempts", now.Sub(r.FailingSince).Round(time.Second), r.FailedAttempts)
	if !r.NextRetry.IsZero() {
		msg += fmt.Sprintf(", next try in %s", max(r.NextRetry.Sub(now), 0).Round(100*time.Millisecond))
	}
	return msg
}

// StatusCommand is `swallowkeeper status`: it asks a running daemon for
// its status and prints it, and returns the exit code.
func StatusCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("swallowkeeper status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "the daemon's metrics.listen address (default: from -config, else "+config.Default().Metrics.Listen+")")
	path := fs.String("config", "", "configuration file to read metrics.listen from")
	asJSON := fs.Bool("json", false, "print the raw JSON")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: swallowkeeper status [flags]\n\nShows what a running daemon applied, what each nginx target acknowledged,\nand which guards hold changes back, and why.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	err := func() error {
		if *addr == "" {
			*addr = config.Default().Metrics.Listen
			if *path != "" {
				cfg, err := config.Load(*path)
				if err != nil {
					return err
				}
				*addr = cfg.Metrics.Listen
			}
		}
		body, err := Fetch(ctx, *addr)
		if err != nil || *asJSON {
			stdout.Write(body)
			return err
		}
		return Print(stdout, body)
	}()
	if err != nil {
		fmt.Fprintf(stderr, "swallowkeeper status: %v\n", err)
		return 1
	}
	return 0
}

// Fetch asks the daemon listening on addr (host:port) for /status and
// returns the answer as it came.
func Fetch(ctx context.Context, addr string) ([]byte, error) {
	url := "http://" + addr + "/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("is the daemon running with metrics.listen %s? %w", addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusForbidden {
		return nil, fmt.Errorf("%s: %s: the daemon answers /status only for an IP address, localhost or a name in metrics.allowed_hosts", url, resp.Status)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return body, nil
}

// Print writes a /status answer for people.
func Print(w io.Writer, body []byte) error {
	var doc Doc
	if err := json.Unmarshal(body, &doc); err != nil {
		return fmt.Errorf("/status: %w", err)
	}
	fmt.Fprintf(w, "swallowkeeper %s: %d/%d sources answered", doc.Version, doc.Answered, doc.Sources)
	if !doc.LastApply.IsZero() {
		fmt.Fprintf(w, ", last change applied %s ago", time.Since(doc.LastApply).Round(time.Second))
	}
	fmt.Fprintln(w)
	for _, r := range doc.Registries {
		if r.Up {
			fmt.Fprintf(w, "registry %s: reachable\n", r.Name)
			continue
		}
		since := ""
		if !r.Since.IsZero() {
			since = fmt.Sprintf(" for %s", time.Since(r.Since).Round(time.Second))
		}
		fmt.Fprintf(w, "REGISTRY UNREACHABLE%s (nginx keeps its state): %s: %s\n", since, r.Name, r.Error)
	}
	if doc.PersistError != "" {
		fmt.Fprintf(w, "PERSIST FAILING (nothing is pushed until it works): %s\n", doc.PersistError)
	}
	if r := doc.Reload; r != nil && r.Failing {
		fmt.Fprintf(w, "RELOAD FAILING (nginx serves an older set; retried until it passes, error below): %s\n", r.failing(time.Now()))
	}
	fmt.Fprintf(w, "\nTargets:\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range doc.Targets {
		state := "in sync"
		if !t.InSync {
			state = "NOT IN SYNC"
		}
		if t.Kind == "reload" { // it counts no upstreams: nginx reads them from the file
			fmt.Fprintf(tw, "  %s\t%s\t%s", t.URL, state, reloadedAgo(t.LastSync))
		} else {
			fmt.Fprintf(tw, "  %s\t%s\t%d upstreams\tdrift repairs %d", t.URL, state, t.Upstreams, t.DriftRepairs)
		}
		if len(t.Drift) > 0 {
			fmt.Fprintf(tw, "\tlast drift: %s", strings.Join(t.Drift, ", "))
		}
		if t.LastError != "" && !t.InSync {
			fmt.Fprintf(tw, "\tlast error %s ago: %s", time.Since(t.LastErrorAt).Round(time.Second), t.LastError)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	printSplits(w, doc.Splits)
	printHolds(w, doc.Holds)
	printDrains(w, doc.Drains)
	printDropped(w, doc.Dropped)
	printHistory(w, doc.History)
	fmt.Fprintf(w, "\nUpstreams:\n")
	for _, u := range doc.Upstreams {
		fmt.Fprintf(w, "  %s (%s)\n", u.Name, upstreamLine(u))
		for _, s := range u.Servers {
			flags := []string{fmt.Sprintf("weight=%d", s.Weight)}
			if s.Backup {
				flags = append(flags, "backup")
			}
			if s.Down {
				flags = append(flags, "down")
			}
			tags := ""
			if len(s.Tags) > 0 {
				tags = " [" + strings.Join(s.Tags, " ") + "]"
			}
			fmt.Fprintf(w, "    %-24s %-12s %s%s\n", s.Addr, strings.Join(flags, " "), s.Instance, tags)
		}
	}
	return nil
}

// upstreamLine is what `status` says of an upstream besides its servers:
// its service when known (an upstream loaded from the file at start has
// none until the registry changes it), its balancing method when not
// round robin, and its keepalive.
func upstreamLine(u Upstream) string {
	var parts []string
	if u.Service != "" {
		parts = append(parts, "service "+printable(u.Service))
	}
	if u.Balance != "" {
		parts = append(parts, printable(u.Balance))
	}
	return strings.Join(append(parts, fmt.Sprintf("keepalive %d", u.Keepalive)), ", ")
}

// reloadedAgo says when the reload sink last reloaded nginx.
func reloadedAgo(last time.Time) string {
	if last.IsZero() {
		return "nginx not reloaded yet"
	}
	return fmt.Sprintf("nginx reloaded %s ago", time.Since(last).Round(time.Second))
}

func printHolds(w io.Writer, holds []Hold) {
	if len(holds) == 0 {
		return
	}
	fmt.Fprintf(w, "\nGuards holding changes back:\n")
	for _, h := range holds {
		name := h.Upstream
		if name == "" {
			name = "(all)"
		}
		since := ""
		if !h.Since.IsZero() {
			since = fmt.Sprintf(" (for %s)", time.Since(h.Since).Round(time.Second))
		}
		fmt.Fprintf(w, "  %s [%s]%s: %s\n", name, h.Guard, since, h.Reason)
	}
}

func printDropped(w io.Writer, dropped []Dropped) {
	if len(dropped) == 0 {
		return
	}
	fmt.Fprintf(w, "\nRegistry entries dropped as invalid (never rendered):\n")
	for i, d := range dropped {
		if i == 10 {
			fmt.Fprintf(w, "  ... and %d more (see /status)\n", len(dropped)-10)
			break
		}
		name := d.Instance
		if d.Service != "" {
			name = d.Service + "/" + d.Instance
		}
		fmt.Fprintf(w, "  %s: %s\n", printable(name), printable(d.Reason))
	}
}

// printHistory lists the recent changes, oldest first, each with its
// time, upstream and cause.
func printHistory(w io.Writer, changes []history.Event) {
	if len(changes) == 0 {
		return
	}
	fmt.Fprintf(w, "\nRecent changes (oldest first):\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range changes {
		name := c.Upstream
		if name == "" {
			name = "(all)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t(%s)\n", c.At.Local().Format("2006-01-02 15:04:05"), printable(name), c.Change, printable(c.Detail), c.Cause)
	}
	tw.Flush()
}

// page is the status document as the HTML page shows it.
func (d *Daemon) page() statuspage.Page {
	var doc Doc
	json.Unmarshal(d.statusJSON(false), &doc) // our own answer
	p := statuspage.Page{
		Version:      doc.Version,
		Refresh:      5 * time.Second,
		Sources:      []statuspage.Source{},
		LastApply:    doc.LastApply,
		PersistError: doc.PersistError,
		File:         d.File,
	}
	for _, d := range doc.Dropped {
		p.Dropped = append(p.Dropped, statuspage.Dropped{Service: d.Service, Instance: d.Instance, Reason: d.Reason})
	}
	for _, r := range doc.Registries {
		src := statuspage.Source{Name: r.Name, Answered: doc.Sources > 0 && doc.Answered == doc.Sources}
		if !r.Up {
			src.Unreachable, src.Since = r.Error, r.Since
		}
		p.Sources = append(p.Sources, src)
	}
	for _, h := range doc.Holds {
		p.Holds = append(p.Holds, statuspage.Hold{Upstream: h.Upstream, Reason: h.Reason, Since: h.Since})
	}
	for _, t := range doc.Targets {
		p.Targets = append(p.Targets, statuspage.Target{
			Kind: t.Kind, URL: t.URL, InSync: t.InSync, LastSync: t.LastSync, LastError: t.LastError, LastErrorAt: t.LastErrorAt,
			Upstreams: t.Upstreams, DriftRepairs: t.DriftRepairs, Drift: t.Drift,
		})
	}
	for _, u := range doc.Upstreams {
		pu := statuspage.Upstream{Name: u.Name, Service: u.Service, Keepalive: u.Keepalive, Balance: u.Balance}
		for _, s := range u.Servers {
			pu.Servers = append(pu.Servers, statuspage.Server{
				Addr: s.Addr, Weight: s.Weight, MaxFails: s.MaxFails, FailTimeout: time.Duration(s.FailTimeout),
				Backup: s.Backup, Down: s.Down, Instance: s.Instance, Tags: s.Tags,
			})
		}
		for _, series := range doc.Timeline {
			if series.Upstream == u.Name {
				for _, pt := range series.Points {
					pu.Counts = append(pu.Counts, statuspage.Count{At: pt.At, Servers: pt.Servers})
				}
			}
		}
		p.Upstreams = append(p.Upstreams, pu)
	}
	p.Drains = pageDrains(doc.Drains)
	p.Splits = pageSplits(doc.Splits)
	for _, c := range doc.History {
		p.History = append(p.History, statuspage.Change{At: c.At, Upstream: c.Upstream, Change: c.Change, Detail: c.Detail, Cause: c.Cause})
	}
	return p
}

// printable quotes registry text that holds control characters, so that a
// hostile key cannot forge lines on an operator's terminal.
func printable(s string) string {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == 0x9b {
			return strconv.Quote(s)
		}
	}
	return s
}
