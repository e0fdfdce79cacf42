// Package statuspage renders the daemon's human status page: one
// server-rendered HTML document with inline CSS, no scripts and no external
// assets, so that it works from a browser on a locked-down host and shows
// nothing it did not get from the daemon.
//
// Everything in a Page that came from a registry (names, instance ids,
// tags, reasons built from them) is untrusted. html/template escapes it by
// context; the page adds no script, and the Handler sends a
// Content-Security-Policy that forbids scripts anyway.
package statuspage

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Page is everything the status page shows. The caller builds it from the
// engine's and the targets' status; Render only formats it and shows lists
// in the order given.
type Page struct {
	Version     string
	GeneratedAt time.Time // "now" for the ages shown; the Handler fills it when zero

	// Refresh, when positive, makes the browser reload the page this often
	// (whole seconds).
	Refresh time.Duration

	Sources      []Source
	LastApply    time.Time // last change persisted and handed to the targets
	PersistError string    // last failure to write File; nothing is pushed meanwhile
	File         string    // the persisted upstreams file nginx includes

	Holds     []Hold
	Targets   []Target
	Upstreams []Upstream // as applied
	Dropped   []Dropped  // registry entries left out as invalid

	// History is the last changes applied, oldest first; the page lists
	// the newest first.
	History []Change

	// Drains are the servers drained by hand (swallowkeeper drain).
	Drains []Drain

	// Splits are the traffic split rules in force.
	Splits []Split
}

// Split is a traffic split rule: Percent of Upstream's requests (those no
// Match took) go to To.
type Split struct {
	Upstream, To string
	Percent      string // as configured: "10", "0.5"
	Sticky       string
	Match        string // "header X-Canary=1, cookie canary=1"
	From         string // config or consul kv
	GroupMissing bool   // no upstream To: every request stays on Upstream
	// NotPushed names the targets that do not carry it, and why.
	NotPushed []string
}

// Drain is a server drained by hand; Note says why the mark does not
// apply now (its server is not in the registry, or the guard refused it).
type Drain struct {
	Upstream string
	Address  string
	Since    time.Time
	Active   bool
	Note     string
}

// Change is one applied change: a server added, removed or changed, an
// upstream added or removed, a guard's hold or release.
type Change struct {
	At       time.Time
	Upstream string // "" = every upstream
	Change   string // "+ server", "- server", "~ server", "hold", "release", ...
	Detail   string
	Cause    string // "registry", "start", "guard confirm", ...
}

// Count is an upstream's server count from At on.
type Count struct {
	At      time.Time
	Servers int
}

// Source is one configured registry watch.
type Source struct {
	Name     string // e.g. "consul 127.0.0.1:8500"
	Answered bool   // it has sent a full snapshot; nothing is applied until all have
	// Unreachable, when set, is why the source cannot reach its registry
	// now (nginx keeps its state meanwhile); Since is when it lost it.
	Unreachable string
	Since       time.Time
}

// Hold is a guard holding changes back.
type Hold struct {
	Upstream string // "" = everything
	Reason   string
	Since    time.Time // zero if unknown
}

// Target is one nginx instance the upstreams are pushed to, or in reload
// mode the reload of nginx (Kind "reload"), which pushes nothing: nginx
// reads every upstream from the file, and LastSync is its last reload.
type Target struct {
	Kind         string // "dyups" or "reload"; "" is read as dyups
	URL          string
	InSync       bool      // the last sync or drift check left nothing to do
	LastSync     time.Time // end of the last sync that succeeded
	LastError    string
	LastErrorAt  time.Time
	Upstreams    int      // upstreams the target acknowledged
	DriftRepairs int      // upstreams pushed again after a drift check
	Drift        []string // upstreams that differed at the last check
}

// Upstream is one applied nginx upstream block.
type Upstream struct {
	Name      string
	Service   string // the registry service it was built from
	Keepalive int
	Balance   string // the balancing method, "least_conn"; "" for round robin
	Held      bool   // a guard holds changes to it back (also shown when a Hold names it)
	Servers   []Server
	// Counts is its server count over the last TimelineWindow, oldest
	// first (the first may be older: the count the window starts with);
	// empty when it did not change, and the page draws len(Servers).
	Counts []Count
}

// TimelineWindow is how far back an upstream's timeline reaches.
const TimelineWindow = time.Hour

// Server is one server line of an upstream, with where it came from.
type Server struct {
	Addr        string
	Weight      int
	MaxFails    int
	FailTimeout time.Duration
	Backup      bool
	Down        bool
	Instance    string   // the registry instance id
	Tags        []string // the instance's registry tags
}

// Dropped is a registry entry left out because it was invalid.
type Dropped struct {
	Service  string
	Instance string
	Reason   string
}

// Render writes p as a complete HTML document.
func Render(w io.Writer, p Page) error {
	if p.GeneratedAt.IsZero() {
		p.GeneratedAt = time.Now()
	}
	if err := pageTemplate.Execute(w, build(p)); err != nil {
		return fmt.Errorf("statuspage: render: %w", err)
	}
	return nil
}

// Handler serves the page built by get on GET and HEAD. get is called once
// per request and must be safe to call concurrently. The page is rendered
// in full before anything is written, so a failure is a clean 500.
func Handler(get func() Page) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		p := get()
		if p.GeneratedAt.IsZero() {
			p.GeneratedAt = time.Now()
		}
		var buf bytes.Buffer
		if err := Render(&buf, p); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("Content-Length", strconv.Itoa(buf.Len()))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			w.Write(buf.Bytes())
		}
	})
}
