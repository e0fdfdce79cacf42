package statuspage

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Timeline geometry, in SVG user units (= CSS pixels).
const (
	timelineW, timelineH = 240, 36
	timelinePad          = 3
)

// timeline is one upstream's server counts drawn as a step line over the
// last TimelineWindow. Points holds only numbers that build formatted, so
// the SVG carries nothing from the registry but through html/template.
type timeline struct {
	W, H     int
	Points   string // the polyline's points
	Min, Max int    // server counts shown
	Changes  int    // count changes in the window
	Title    string // for people and screen readers
}

// drawTimeline draws counts (oldest first; the first one may predate the
// window) up to now, ending at current, the count applied now.
func drawTimeline(name string, counts []Count, current int, now time.Time) timeline {
	from := now.Add(-TimelineWindow)
	type step struct {
		x float64
		n int
	}
	var steps []step
	for _, c := range counts {
		x := float64(c.At.Sub(from)) / float64(TimelineWindow) * timelineW
		x = min(max(x, 0), timelineW)
		if len(steps) > 0 && steps[len(steps)-1].n == c.Servers {
			continue
		}
		steps = append(steps, step{x, c.Servers})
	}
	if len(steps) == 0 || steps[len(steps)-1].n != current {
		steps = append(steps, step{timelineW, current})
	}
	steps[0].x = 0 // the first count stands for the window's start
	tl := timeline{W: timelineW, H: timelineH, Min: steps[0].n, Max: steps[0].n, Changes: len(steps) - 1}
	for _, s := range steps {
		tl.Min, tl.Max = min(tl.Min, s.n), max(tl.Max, s.n)
	}
	// A quarter of headroom, so that a flat line is not mistaken for the
	// frame; 0 servers is the bottom.
	top := float64(max(tl.Max, 1)) * 1.25
	y := func(n int) float64 {
		return timelinePad + (top-float64(n))/top*(timelineH-2*timelinePad)
	}
	var pts []string
	pt := func(x, y float64) {
		pts = append(pts, strconv.FormatFloat(x, 'f', 1, 64)+","+strconv.FormatFloat(y, 'f', 1, 64))
	}
	for i, s := range steps {
		if i > 0 {
			pt(s.x, y(steps[i-1].n))
		}
		pt(s.x, y(s.n))
	}
	pt(timelineW, y(steps[len(steps)-1].n))
	tl.Points = strings.Join(pts, " ")
	if tl.Changes == 0 {
		tl.Title = fmt.Sprintf("%s: %d servers, unchanged over the last %s", name, current, shortDuration(TimelineWindow))
	} else {
		tl.Title = fmt.Sprintf("%s: %d to %d servers over the last %s, %d changes, %d now", name, tl.Min, tl.Max, shortDuration(TimelineWindow), tl.Changes, current)
	}
	return tl
}

func shortDuration(d time.Duration) string {
	if d == time.Hour {
		return "hour"
	}
	return strings.TrimSuffix(strings.TrimSuffix(d.String(), "0s"), "0m")
}
