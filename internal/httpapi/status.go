package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/history"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// document is the /status answer. The daemon writes it with Targets as
// raw JSON, one entry per sink whatever its kind; clients read it as Doc.
type document[T any] struct {
	Version      string     `json:"version"`
	Sources      int        `json:"sources"`
	Answered     int        `json:"sources_answered"`
	Registries   []Registry `json:"registries"`
	LastApply    time.Time  `json:"last_apply,omitzero"`
	PersistError string     `json:"persist_error,omitempty"`
	Holds        []Hold     `json:"holds"`
	Targets      []T        `json:"targets"`
	Upstreams    []Upstream `json:"upstreams"`
	Dropped      []Dropped  `json:"dropped"`
	// History is the last changes applied, oldest first; Timeline each
	// changed upstream's server counts over the last hour.
	History  []history.Event `json:"history"`
	Timeline []Series        `json:"timeline"`
	// Drains is every server drained by hand (swallowkeeper drain).
	Drains []Drain `json:"drains"`
}

// Drain is a server drained by hand, and whether the mark applies now.
type Drain struct {
	Upstream string    `json:"upstream"`
	Address  string    `json:"address"`
	Since    time.Time `json:"since,omitzero"`
	Active   bool      `json:"active"`
	Note     string    `json:"note,omitempty"`
}

// Series is an upstream's server counts over the last hour, oldest first:
// each count holds from its time on (the first may be older than the
// hour: the count the hour starts with).
type Series struct {
	Upstream string          `json:"upstream"`
	Points   []history.Point `json:"points"`
}

// Duration is a duration in JSON as Go and nginx write it: "10s".
type Duration time.Duration

// MarshalJSON writes d as a string, "10s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a string such as "10s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string such as \"10s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// Registry is whether a source reaches its registry.
type Registry struct {
	Name  string    `json:"name"`
	Up    bool      `json:"up"`
	Error string    `json:"error,omitempty"`
	Since time.Time `json:"since,omitzero"`
}

// Hold is a change a guard holds back.
type Hold struct {
	Upstream string    `json:"upstream"` // "" = everything
	Guard    string    `json:"guard"`
	Reason   string    `json:"reason"`
	Since    time.Time `json:"since,omitzero"`
}

// Upstream is an applied upstream.
type Upstream struct {
	Name      string `json:"name"`
	Service   string `json:"service,omitempty"`
	Keepalive int    `json:"keepalive"`
	// Balance is the balancing method, "least_conn", "hash $remote_addr";
	// empty for nginx's default, round robin.
	Balance string   `json:"balance,omitempty"`
	Servers []Server `json:"servers"`
}

// Server is one server of an applied upstream.
type Server struct {
	Addr        string   `json:"addr"`
	Weight      int      `json:"weight"`
	MaxFails    int      `json:"max_fails"`
	FailTimeout Duration `json:"fail_timeout"`
	Instance    string   `json:"instance,omitempty"`
	Tags        []string `json:"tags,omitempty"`
	Backup      bool     `json:"backup,omitempty"`
	Down        bool     `json:"down,omitempty"`
}

// Dropped is a registry entry left out as invalid.
type Dropped struct {
	Service  string `json:"service,omitempty"`
	Instance string `json:"instance"`
	Reason   string `json:"reason"`
}

// sinkEntry is the part of a sink's /status entry that every kind has;
// the kind's Detail follows it.
type sinkEntry struct {
	Kind        string    `json:"kind"` // "dyups", "reload"
	URL         string    `json:"url"`
	InSync      bool      `json:"in_sync"`
	LastSync    time.Time `json:"last_sync,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	Upstreams   int       `json:"upstreams"`
}

// statusJSON is the /status answer: the engine's status, each sink's entry
// (its common fields, then its Detail's, or the Detail under the sink's
// Section key at the top level) and the sources' reachability.
func (d *Daemon) statusJSON(indent bool) []byte {
	doc := document[json.RawMessage]{Version: d.Version, Registries: []Registry{}, Holds: []Hold{}, Targets: []json.RawMessage{},
		Upstreams: []Upstream{}, Dropped: []Dropped{}, History: []history.Event{}, Timeline: []Series{}, Drains: []Drain{}}
	for _, s := range d.Sources {
		r := Registry{Name: s.Name, Up: true}
		if hr, ok := s.Source.(engine.HealthReporter); ok {
			h := hr.Health()
			r.Up, r.Error, r.Since = h.Up, h.Error, h.Since
		}
		doc.Registries = append(doc.Registries, r)
	}
	sections := map[string]any{}
	for _, s := range d.Engine.SinkStatuses() {
		if s.Name == "" && s.Section != "" { // a sink of no target of its own (splits): its section only
			sections[s.Section] = s.Detail
			continue
		}
		entry := mustJSON(sinkEntry{s.Kind, s.Name, s.InSync, s.LastSync, s.LastError, s.LastErrorAt, s.Upstreams})
		switch {
		case s.Section != "":
			sections[s.Section] = s.Detail
		case s.Detail != nil:
			entry = joinObjects(entry, mustJSON(s.Detail))
		}
		doc.Targets = append(doc.Targets, entry)
	}
	if st := d.Engine.Status(); st != nil {
		fill(&doc, st)
	}
	out := mustJSON(doc)
	if len(sections) > 0 {
		out = joinObjects(out, mustJSON(sections))
	}
	if !indent {
		return out
	}
	var buf bytes.Buffer
	json.Indent(&buf, out, "", "  ")
	buf.WriteByte('\n')
	return buf.Bytes()
}

// fill adds the engine's status to the document.
func fill(doc *document[json.RawMessage], st *engine.Status) {
	doc.Sources, doc.Answered, doc.LastApply, doc.PersistError = st.Sources, st.Answered, st.LastApply, st.PersistError
	for _, d := range st.Dropped {
		doc.Dropped = append(doc.Dropped, Dropped{d.Service, d.Instance, d.Reason})
	}
	for _, h := range st.Holds {
		doc.Holds = append(doc.Holds, Hold{h.Upstream, h.Guard, h.Reason, h.Since})
	}
	for _, name := range st.Applied.Names() {
		u := st.Applied[name]
		ud := Upstream{Name: name, Service: u.Service, Keepalive: u.Keepalive, Servers: []Server{}}
		if u.Balance != (upstream.Balance{}) {
			ud.Balance = u.Balance.String()
		}
		for _, s := range u.Servers {
			ud.Servers = append(ud.Servers, Server{Addr: s.Addr.String(), Weight: s.Weight, MaxFails: s.MaxFails, FailTimeout: Duration(s.FailTimeout),
				Tags: s.Tags, Instance: s.Instance, Backup: s.Backup, Down: s.Down})
		}
		doc.Upstreams = append(doc.Upstreams, ud)
	}
	doc.History = append(doc.History, st.History...)
	for _, name := range st.Timeline.Names() {
		points, _ := st.Timeline.Get(name)
		doc.Timeline = append(doc.Timeline, Series{name, points})
	}
	for _, d := range st.Drains {
		doc.Drains = append(doc.Drains, Drain{d.Upstream, d.Addr.String(), d.Since, d.Active, d.Note})
	}
}

// notReady says why the daemon is not ready, or "" when it is: the
// persisted state is loaded, every kind of sink has a sink that is Ready
// (a dyups target in sync; a reload sink not failing), and the newest
// state is persisted.
func (d *Daemon) notReady() string {
	st := d.Engine.Status()
	if st == nil {
		return "persisted state not loaded yet"
	}
	var kinds []string
	ready, why := map[string]bool{}, map[string]string{}
	for _, s := range d.Engine.SinkStatuses() {
		if _, seen := ready[s.Kind]; !seen {
			kinds = append(kinds, s.Kind)
		}
		ready[s.Kind] = ready[s.Kind] || s.Ready
		if !s.Ready && why[s.Kind] == "" {
			why[s.Kind] = s.NotReady
		}
	}
	for _, k := range kinds {
		if !ready[k] && why[k] != "" {
			return why[k]
		}
		if !ready[k] {
			return "no " + k + " sink ready yet"
		}
	}
	// A registry change that cannot be written (a full disk, a verify
	// command that refuses the file) reaches no nginx: say so.
	if st.PersistError != "" {
		return "the newest state is not persisted (retrying): " + st.PersistError
	}
	return ""
}

// mustJSON marshals what cannot fail to marshal (plain data).
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte(`{}`)
	}
	return b
}

// joinObjects returns the JSON object with a's members, then b's.
func joinObjects(a, b []byte) []byte {
	a, b = bytes.TrimSpace(a), bytes.TrimSpace(b)
	switch {
	case len(b) < 2 || string(b) == "{}" || b[0] != '{':
		return a
	case string(a) == "{}":
		return b
	}
	out := append(append([]byte{}, a[:len(a)-1]...), ',')
	return append(out, b[1:]...)
}
