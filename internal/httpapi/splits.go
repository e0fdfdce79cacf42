package httpapi

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/sink/splits"
	"github.com/swallowkeeper/swallowkeeper/internal/split"
	"github.com/swallowkeeper/swallowkeeper/internal/statuspage"
)

// printSplits writes the traffic splits for `swallowkeeper status`: each
// rule, then where it is pushed. Nothing when there is no rule and no
// target ever held one.
func printSplits(w io.Writer, s *splits.Status) {
	if s == nil || (len(s.Rules) == 0 && s.KVError == "") {
		return
	}
	fmt.Fprintf(w, "\nSplits:\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range s.Rules {
		fmt.Fprintf(tw, "  %s → %s\t%s%%", printable(r.Upstream), printable(r.To), split.PercentText(r.Percent))
		if r.Sticky != "" {
			fmt.Fprintf(tw, " sticky %s", printable(r.Sticky))
		}
		fmt.Fprintf(tw, "\t%s\tfrom %s", printable(strings.Join(r.Match, ", ")), r.From)
		if r.GroupMissing {
			fmt.Fprintf(tw, "\tno upstream %s: every request stays on %s", printable(r.To), printable(r.Upstream))
		}
		if r.Refused != "" {
			fmt.Fprintf(tw, "\tNOT PUSHED: %s", printable(r.Refused))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	if s.KVError != "" {
		fmt.Fprintf(w, "  CONSUL KV UNREADABLE (the rules read before stay): %s\n", s.KVError)
	}
	for _, t := range s.Targets {
		switch {
		case t.Note != "":
			fmt.Fprintf(w, "  %s: not pushed: %s\n", t.URL, t.Note)
		case !t.InSync:
			fmt.Fprintf(w, "  %s: NOT IN SYNC, last error %s ago: %s\n", t.URL, time.Since(t.LastErrorAt).Round(time.Second), t.LastError)
		case t.Pushed:
			fmt.Fprintf(w, "  %s: pushed\n", t.URL)
		}
	}
}

// pageSplits is the status page's view of the splits.
func pageSplits(s *splits.Status) []statuspage.Split {
	if s == nil {
		return nil
	}
	var out []statuspage.Split
	for _, r := range s.Rules {
		ps := statuspage.Split{Upstream: r.Upstream, To: r.To, Percent: split.PercentText(r.Percent), Sticky: r.Sticky,
			Match: strings.Join(r.Match, ", "), From: r.From, GroupMissing: r.GroupMissing}
		for _, t := range s.Targets {
			switch {
			case t.Note != "":
				ps.NotPushed = append(ps.NotPushed, t.URL+": "+t.Note)
			case !t.InSync:
				ps.NotPushed = append(ps.NotPushed, t.URL+": "+t.LastError)
			}
		}
		out = append(out, ps)
	}
	return out
}
