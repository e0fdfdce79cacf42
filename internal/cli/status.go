package cli

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
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/dyups"
	"github.com/swallowkeeper/swallowkeeper/internal/statuspage"
)

// statusDoc is the daemon's /status answer.
type statusDoc struct {
	Version      string         `json:"version"`
	Sources      int            `json:"sources"`
	Answered     int            `json:"sources_answered"`
	Registries   []registryDoc  `json:"registries"`
	LastApply    time.Time      `json:"last_apply,omitzero"`
	PersistError string         `json:"persist_error,omitempty"`
	Holds        []holdDoc      `json:"holds"`
	Targets      []dyups.Status `json:"targets"`
	Reload       *reloadDoc     `json:"reload,omitempty"` // reload mode only
	Upstreams    []upstreamDoc  `json:"upstreams"`
	Dropped      []droppedDoc   `json:"dropped"`
}

// reloadDoc is the reload sink's state: whether nginx was last reloaded
// with the desired state and, while a test or reload fails, since when, how
// often and when it is tried again.
type reloadDoc struct {
	Command        string    `json:"command"`
	InSync         bool      `json:"in_sync"`
	LastReload     time.Time `json:"last_reload,omitzero"`
	Failing        bool      `json:"failing"`
	FailedAttempts int       `json:"failed_attempts"`
	FailingSince   time.Time `json:"failing_since,omitzero"`
	NextRetry      time.Time `json:"next_retry,omitzero"`
	LastError      string    `json:"last_error,omitempty"`
	LastErrorAt    time.Time `json:"last_error_at,omitzero"`
}

// droppedDoc is a registry entry left out as invalid.
type droppedDoc struct {
	Service  string `json:"service,omitempty"`
	Instance string `json:"instance"`
	Reason   string `json:"reason"`
}

type holdDoc struct {
	Upstream string    `json:"upstream"` // "" = everything
	Guard    string    `json:"guard"`
	Reason   string    `json:"reason"`
	Since    time.Time `json:"since,omitzero"`
}

type upstreamDoc struct {
	Name      string      `json:"name"`
	Service   string      `json:"service,omitempty"`
	Keepalive int         `json:"keepalive"`
	Servers   []serverDoc `json:"servers"`
}

type serverDoc struct {
	Addr        string        `json:"addr"`
	Weight      int           `json:"weight"`
	MaxFails    int           `json:"max_fails"`
	FailTimeout time.Duration `json:"fail_timeout_ns"`
	Instance    string        `json:"instance,omitempty"`
	Tags        []string      `json:"tags,omitempty"`
	Backup      bool          `json:"backup,omitempty"`
	Down        bool          `json:"down,omitempty"`
}

// namedSource is a source with the name status shows for it.
type namedSource struct {
	name string
	src  engine.Source
}

// registryDoc is whether a source reaches its registry.
type registryDoc struct {
	Name  string    `json:"name"`
	Up    bool      `json:"up"`
	Error string    `json:"error,omitempty"`
	Since time.Time `json:"since,omitzero"`
}

func buildStatus(p *parts) statusDoc {
	doc := statusDoc{Version: Version, Registries: []registryDoc{}, Holds: []holdDoc{}, Targets: []dyups.Status{}, Upstreams: []upstreamDoc{}, Dropped: []droppedDoc{}}
	for _, s := range p.sources {
		r := registryDoc{Name: s.name, Up: true}
		if hr, ok := s.src.(engine.HealthReporter); ok {
			h := hr.Health()
			r.Up, r.Error, r.Since = h.Up, h.Error, h.Since
		}
		doc.Registries = append(doc.Registries, r)
	}
	for _, t := range p.targets {
		doc.Targets = append(doc.Targets, t.Status())
	}
	if p.reload != nil {
		// Reload mode shows as a target: whether nginx was last reloaded
		// with the desired state, and why not.
		r := p.reload.Status()
		rd := &reloadDoc{
			Command: strings.Join(r.Command, " "), InSync: r.InSync, LastReload: r.LastReload,
			Failing: r.Failing, FailedAttempts: r.Attempts, FailingSince: r.FailingSince, NextRetry: r.NextRetry,
			LastError: r.LastError, LastErrorAt: r.LastErrorAt,
		}
		doc.Reload = rd
		lastErr := r.LastError
		if r.Failing {
			lastErr = reloadFailing(rd, time.Now()) + ": " + r.LastError
		}
		doc.Targets = append(doc.Targets, dyups.Status{
			URL: "reload: " + rd.Command, InSync: r.InSync, LastSync: r.LastReload,
			LastError: lastErr, LastErrorAt: r.LastErrorAt,
		})
	}
	st := p.engine.Status()
	if st == nil {
		return doc
	}
	doc.Sources, doc.Answered, doc.LastApply, doc.PersistError = st.Sources, st.Answered, st.LastApply, st.PersistError
	for _, d := range st.Dropped {
		doc.Dropped = append(doc.Dropped, droppedDoc{d.Service, d.Instance, d.Reason})
	}
	for _, h := range st.Holds {
		doc.Holds = append(doc.Holds, holdDoc{h.Upstream, h.Guard, h.Reason, h.Since})
	}
	for _, name := range st.Applied.Names() {
		u := st.Applied[name]
		ud := upstreamDoc{Name: name, Service: u.Service, Keepalive: u.Keepalive, Servers: []serverDoc{}}
		for _, s := range u.Servers {
			ud.Servers = append(ud.Servers, serverDoc{Addr: s.Addr.String(), Weight: s.Weight, MaxFails: s.MaxFails, FailTimeout: s.FailTimeout, Tags: s.Tags, Instance: s.Instance, Backup: s.Backup, Down: s.Down})
		}
		doc.Upstreams = append(doc.Upstreams, ud)
	}
	return doc
}

// reloadFailing says, for people, how long reload mode has been failing
// and when it tries again.
func reloadFailing(r *reloadDoc, now time.Time) string {
	msg := fmt.Sprintf("nginx not reloaded for %s, %d failed attempts", now.Sub(r.FailingSince).Round(time.Second), r.FailedAttempts)
	if !r.NextRetry.IsZero() {
		msg += fmt.Sprintf(", next try in %s", max(r.NextRetry.Sub(now), 0).Round(100*time.Millisecond))
	}
	return msg
}

func statusHandler(p *parts) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(buildStatus(p))
	})
}

// status asks a running daemon for its status and prints it.
func status(ctx context.Context, args []string, stdout, stderr io.Writer) int {
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
	if *addr == "" {
		*addr = config.Default().Metrics.Listen
		if *path != "" {
			cfg, err := config.Load(*path)
			if err != nil {
				fmt.Fprintf(stderr, "swallowkeeper status: %v\n", err)
				return 1
			}
			*addr = cfg.Metrics.Listen
		}
	}
	url := "http://" + *addr + "/status"
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "swallowkeeper status: is the daemon running with metrics.listen %s? %v\n", *addr, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusForbidden {
		fmt.Fprintf(stderr, "swallowkeeper status: %s: %s: the daemon answers /status only for an IP address, localhost or a name in metrics.allowed_hosts\n", url, resp.Status)
		return 1
	}
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "swallowkeeper status: %s: %s\n", url, resp.Status)
		return 1
	}
	if *asJSON {
		stdout.Write(body)
		return 0
	}
	var doc statusDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		fmt.Fprintf(stderr, "swallowkeeper status: %s: %v\n", url, err)
		return 1
	}
	printStatus(stdout, doc)
	return 0
}

func printStatus(w io.Writer, doc statusDoc) {
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
		fmt.Fprintf(w, "RELOAD FAILING (nginx serves an older set; retried until it passes, error below): %s\n", reloadFailing(r, time.Now()))
	}
	fmt.Fprintf(w, "\nTargets:\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range doc.Targets {
		state := "in sync"
		if !t.InSync {
			state = "NOT IN SYNC"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d upstreams\tdrift repairs %d", t.URL, state, t.Upstreams, t.DriftRepairs)
		if len(t.Drift) > 0 {
			fmt.Fprintf(tw, "\tlast drift: %s", strings.Join(t.Drift, ", "))
		}
		if t.LastError != "" && !t.InSync {
			fmt.Fprintf(tw, "\tlast error %s ago: %s", time.Since(t.LastErrorAt).Round(time.Second), t.LastError)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	if len(doc.Holds) > 0 {
		fmt.Fprintf(w, "\nGuards holding changes back:\n")
		for _, h := range doc.Holds {
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
	if len(doc.Dropped) > 0 {
		fmt.Fprintf(w, "\nRegistry entries dropped as invalid (never rendered):\n")
		for i, d := range doc.Dropped {
			if i == 10 {
				fmt.Fprintf(w, "  ... and %d more (see /status)\n", len(doc.Dropped)-10)
				break
			}
			name := d.Instance
			if d.Service != "" {
				name = d.Service + "/" + d.Instance
			}
			fmt.Fprintf(w, "  %s: %s\n", printable(name), printable(d.Reason))
		}
	}
	fmt.Fprintf(w, "\nUpstreams:\n")
	for _, u := range doc.Upstreams {
		fmt.Fprintf(w, "  %s (service %s, keepalive %d)\n", u.Name, u.Service, u.Keepalive)
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
}

// statusPage is the status document as the HTML page shows it.
func statusPage(doc statusDoc, cfg *config.Config) statuspage.Page {
	p := statuspage.Page{
		Version:      doc.Version,
		Refresh:      5 * time.Second,
		Sources:      []statuspage.Source{},
		LastApply:    doc.LastApply,
		PersistError: doc.PersistError,
		File:         cfg.File,
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
			URL: t.URL, InSync: t.InSync, LastSync: t.LastSync, LastError: t.LastError, LastErrorAt: t.LastErrorAt,
			Upstreams: t.Upstreams, DriftRepairs: t.DriftRepairs, Drift: t.Drift,
		})
	}
	for _, u := range doc.Upstreams {
		pu := statuspage.Upstream{Name: u.Name, Service: u.Service, Keepalive: u.Keepalive}
		for _, s := range u.Servers {
			pu.Servers = append(pu.Servers, statuspage.Server{
				Addr: s.Addr, Weight: s.Weight, MaxFails: s.MaxFails, FailTimeout: s.FailTimeout,
				Backup: s.Backup, Down: s.Down, Instance: s.Instance, Tags: s.Tags,
			})
		}
		p.Upstreams = append(p.Upstreams, pu)
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
