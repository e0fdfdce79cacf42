//go:build unix

package statuspage

import (
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// timelineColour is the stroke of .timeline polyline in page.html.
var timelineColour = rgb{0x82, 0x50, 0xdf}

// withHistory is a healthy page whose web upstream went from 3 servers to
// 1 and back to 2 in the last hour, with the changes that did it, one of
// them carrying markup from the registry.
func withHistory() Page {
	p := healthy()
	p.Targets, p.Dropped = nil, nil // keep the upstreams within the screenshot
	p.Sources = p.Sources[:1]
	p.History = []Change{
		{At: now.Add(-50 * time.Minute), Upstream: "web", Change: "- server", Detail: "10.0.0.3:8080", Cause: "registry"},
		{At: now.Add(-50 * time.Minute), Upstream: "web", Change: "- server", Detail: "10.0.0.2:8080", Cause: "registry"},
		{At: now.Add(-20 * time.Minute), Upstream: "", Change: "hold", Detail: "no_services: the registry reports no services", Cause: "registry"},
		{At: now.Add(-19 * time.Minute), Upstream: "", Change: "release", Detail: "no_services: the registry reports no services", Cause: "registry"},
		{At: now.Add(-10 * time.Minute), Upstream: "web", Change: "+ server", Detail: "10.0.0.2:8080 weight=5 <b>x</b>", Cause: "guard confirm"},
	}
	p.Upstreams[1].Counts = []Count{{now.Add(-2 * time.Hour), 3}, {now.Add(-50 * time.Minute), 1}, {now.Add(-10 * time.Minute), 2}}
	p.Upstreams[0], p.Upstreams[1] = p.Upstreams[1], p.Upstreams[0] // web's step line within the screenshot
	return p
}

// TestBrowserRendersHistoryAndTimeline loads a page with recent changes
// and a changing upstream in headless Chromium: the DOM must hold every
// change row, newest first, and an SVG timeline per upstream (a step line
// for web, a flat one for api), and the screenshot must show the
// timelines' stroke colour.
func TestBrowserRendersHistoryAndTimeline(t *testing.T) {
	chromium := findChromium(t)
	if chromium == "" {
		return
	}
	page := withHistory()
	srv := httptest.NewServer(Handler(func() Page { return page }))
	t.Cleanup(srv.Close)
	file := filepath.Join(t.TempDir(), "statuspage-history.png")
	dom := runChromium(t, chromium, "--screenshot="+file, "--dump-dom", srv.URL+"/")
	keepScreenshot(t, file)
	img := decodePNG(t, file)

	if got := strings.Count(dom, `<tr class="change">`); got != len(page.History) {
		t.Errorf("DOM has %d change rows, want %d", got, len(page.History))
	}
	newest, oldest := strings.Index(dom, "guard confirm"), strings.Index(dom, "10.0.0.3:8080</td>")
	if newest < 0 || oldest < 0 || newest > oldest {
		t.Errorf("change rows not newest first: newest at %d, oldest at %d", newest, oldest)
	}
	for _, w := range []string{
		"<h2>Recent changes (5)</h2>", "<strong>all upstreams</strong>", "<code>+ server</code>",
		"10.0.0.2:8080 weight=5 &lt;b&gt;x&lt;/b&gt;",
		"<title>web: 1 to 3 servers over the last hour, 2 changes, 2 now</title>",
		"<title>api: 3 servers, unchanged over the last hour</title>",
	} {
		if !strings.Contains(dom, w) {
			t.Errorf("DOM lacks %q", w)
		}
	}
	if got := strings.Count(dom, `<svg class="timeline"`); got != len(page.Upstreams) {
		t.Errorf("DOM has %d timelines, want %d", got, len(page.Upstreams))
	}
	if strings.Contains(dom, "<script") || strings.Contains(dom, "<b>x</b>") {
		t.Errorf("DOM has markup from a change's detail")
	}
	// web's step line has three levels (3, 1, 2 servers): rows that the
	// colour crosses for >= 20 px are those of its horizontal strokes (and
	// api's flat one, if it shows), at least one row each.
	rows := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		n := 0
		for x := b.Min.X; x < b.Max.X; x++ {
			if pixel(img, x, y).near(timelineColour) {
				n++
			}
		}
		if n >= 20 {
			rows++
		}
	}
	if rows < 3 {
		t.Errorf("screenshot has %d rows with a stroke of the timeline colour %v, want a step line of three levels (>= 3 rows)", rows, timelineColour)
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}
}
