package statuspage

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Overall states, worst first; each is also the banner's CSS class.
const (
	stateBad  = "bad"  // a target is out of sync or the file cannot be written
	stateHold = "hold" // guards hold changes back, or sources have not answered
	stateOK   = "ok"
)

// summary is the banner: the overall state and why.
type summary struct {
	Class   string
	Title   string
	Details []string
}

// view is what the template sees: the Page plus everything derived from it.
type view struct {
	Page
	Now        time.Time
	RefreshSec int
	State      summary
	Answered   int
	Holds      []holdView
	Upstreams  []upstreamView
	Changes    []Change // History, newest first
}

type holdView struct {
	Hold
	Scope string // the upstream name, or "all upstreams"
}

type upstreamView struct {
	Upstream
	Held     bool
	Reasons  []string // of the holds that apply to it
	Drift    []string // targets that differed on it at their last check
	Timeline timeline
}

// build derives the view from p. It does not modify p.
func build(p Page) view {
	v := view{Page: p, Now: p.GeneratedAt, State: stateOf(p)}
	if p.Refresh > 0 {
		v.RefreshSec = max(1, int(p.Refresh.Round(time.Second)/time.Second))
	}
	for _, s := range p.Sources {
		if s.Answered {
			v.Answered++
		}
	}
	for _, h := range p.Holds {
		scope := h.Upstream
		if scope == "" {
			scope = "all upstreams"
		}
		v.Holds = append(v.Holds, holdView{Hold: h, Scope: scope})
	}
	for _, u := range p.Upstreams {
		uv := upstreamView{Upstream: u, Held: u.Held, Timeline: drawTimeline(u.Name, u.Counts, len(u.Servers), p.GeneratedAt)}
		for _, h := range p.Holds {
			if h.Upstream == "" || h.Upstream == u.Name {
				uv.Held = true
				uv.Reasons = append(uv.Reasons, h.Reason)
			}
		}
		for _, t := range p.Targets {
			if slices.Contains(t.Drift, u.Name) {
				uv.Drift = append(uv.Drift, t.URL)
			}
		}
		v.Upstreams = append(v.Upstreams, uv)
	}
	v.Changes = slices.Clone(p.History)
	slices.Reverse(v.Changes)
	return v
}

// stateOf decides the banner. Red beats amber beats green: a target out of
// sync or a failing write means nginx may not serve what the registry says,
// whatever else is true.
func stateOf(p Page) summary {
	var bad, hold []string
	if p.PersistError != "" {
		file := p.File
		if file == "" {
			file = "the upstreams file"
		}
		bad = append(bad, fmt.Sprintf("writing %s fails, nothing is pushed until it works: %s", file, p.PersistError))
	}
	for _, t := range p.Targets {
		if !t.InSync {
			msg := t.URL + " is not in sync"
			if t.LastError != "" {
				msg += ": " + t.LastError
			}
			bad = append(bad, msg)
		}
	}
	const shownHolds = 3
	for i, h := range p.Holds {
		if i == shownHolds {
			hold = append(hold, fmt.Sprintf("and %d more held, listed below", len(p.Holds)-shownHolds))
			break
		}
		scope := h.Upstream
		if scope == "" {
			scope = "all upstreams"
		}
		hold = append(hold, "held "+scope+": "+h.Reason)
	}
	answered := 0
	var unreachable []string
	for _, s := range p.Sources {
		if s.Answered {
			answered++
		}
		if s.Unreachable != "" {
			when := ""
			if !s.Since.IsZero() {
				when = " since " + stamp(s.Since)
			}
			unreachable = append(unreachable, fmt.Sprintf("%s unreachable%s (nginx keeps its state): %s", s.Name, when, s.Unreachable))
		}
	}
	hold = append(unreachable, hold...)
	if answered < len(p.Sources) {
		hold = append(hold, fmt.Sprintf("waiting for sources: %d of %d answered, nothing is applied until all have", answered, len(p.Sources)))
	}
	switch {
	case len(bad) > 0:
		title := "target out of sync"
		if p.PersistError != "" {
			title = "persist error"
		}
		return summary{Class: stateBad, Title: title, Details: append(bad, hold...)}
	case len(unreachable) > 0:
		return summary{Class: stateHold, Title: "registry unreachable", Details: hold}
	case len(hold) > 0:
		return summary{Class: stateHold, Title: "holding changes", Details: hold}
	default:
		return summary{Class: stateOK, Title: "in sync"}
	}
}

// ago formats t relative to now for people: "12s ago", "3h4m ago".
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < -time.Second:
		return "in " + (-d).Round(time.Second).String()
	case d < time.Second:
		return "just now"
	case d < time.Hour:
		return d.Round(time.Second).String() + " ago"
	default:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s") + " ago"
	}
}

// stamp is the exact time, for a tooltip and the datetime attribute.
func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
