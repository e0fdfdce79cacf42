package httpapi

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/statuspage"
)

// printDrains lists the servers drained by hand, for `swallowkeeper status`.
func printDrains(w io.Writer, drains []Drain) {
	if len(drains) == 0 {
		return
	}
	fmt.Fprintf(w, "\nDrained by hand (swallowkeeper undrain UPSTREAM IP:PORT puts one back):\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, d := range drains {
		since := ""
		if !d.Since.IsZero() {
			since = fmt.Sprintf("for %s", time.Since(d.Since).Round(time.Second))
		}
		state := "down"
		if !d.Active {
			state = "NOT APPLIED: " + d.Note
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", printable(d.Upstream), d.Address, since, printable(state))
	}
	tw.Flush()
}

// pageDrains is the drains as the status page shows them.
func pageDrains(drains []Drain) []statuspage.Drain {
	var out []statuspage.Drain
	for _, d := range drains {
		out = append(out, statuspage.Drain{Upstream: d.Upstream, Address: d.Address, Since: d.Since, Active: d.Active, Note: d.Note})
	}
	return out
}
