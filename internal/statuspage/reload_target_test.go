package statuspage

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// targetRow returns the targets table row of the target named url, with
// its markup stripped and its blanks folded.
func targetRow(t *testing.T, html, url string) string {
	t.Helper()
	start := strings.Index(html, `<tr class="target"><td class="nw"><code>`+url+`</code>`)
	if start < 0 {
		t.Fatalf("no target row for %s:\n%s", url, html)
	}
	row := html[start:]
	row = row[:strings.Index(row, "</tr>")]
	text := regexp.MustCompile(`<[^>]*>`).ReplaceAllString(row, " ")
	return strings.Join(strings.Fields(text), " ")
}

// TestReloadTargetShowsItsReloads: the reload sink pushes no upstream
// (nginx reads them all from the file), so its row says what it did,
// the file nginx reloaded with how many upstreams, instead of "0"
// upstreams and "0" drift repairs; a dyups target keeps its counts.
func TestReloadTargetShowsItsReloads(t *testing.T) {
	p := healthy()
	p.Targets = []Target{
		{Kind: "dyups", URL: "http://127.0.0.1:8081", InSync: true, LastSync: now.Add(-3 * time.Second), Upstreams: 2, DriftRepairs: 1},
		{Kind: "reload", URL: "reload: nginx -s reload", InSync: true, LastSync: now.Add(-5 * time.Second)},
		{Kind: "reload", URL: "reload: /usr/sbin/nginx -s reload"},
		{Kind: "reload", URL: "reload: nginx -s quit", LastSync: now.Add(-time.Hour), LastError: "nginx -t: emerg", LastErrorAt: now.Add(-time.Second)},
	}
	html := render(t, p)
	for url, want := range map[string]string{
		"http://127.0.0.1:8081":             "http://127.0.0.1:8081 in sync 2 3s ago 1 none none",
		"reload: nginx -s reload":           "reload: nginx -s reload in sync 2 (file reloaded) 5s ago n/a n/a none",
		"reload: /usr/sbin/nginx -s reload": "reload: /usr/sbin/nginx -s reload not in sync not reloaded yet never n/a n/a none",
		"reload: nginx -s quit":             "reload: nginx -s quit not in sync an older file 1h0m ago n/a n/a nginx -t: emerg ( 1s ago )",
	} {
		if got := targetRow(t, html, url); got != want {
			t.Errorf("row of %s:\n got %q\nwant %q", url, got, want)
		}
	}
}

// TestUpstreamShowsItsBalance: an upstream's balancing method shows next
// to its keepalive, and round robin (nginx's default) adds nothing.
func TestUpstreamShowsItsBalance(t *testing.T) {
	p := healthy()
	p.Upstreams[1].Balance = "hash $cookie_sid consistent"
	html := render(t, p)
	meta := regexp.MustCompile(`(?s)<section class="upstream" id="u-(\w+)">.*?<p class="meta">(.*?)</p>`)
	got := map[string]string{}
	for _, m := range meta.FindAllStringSubmatch(html, -1) {
		got[m[1]] = strings.Join(strings.Fields(regexp.MustCompile(`<[^>]*>`).ReplaceAllString(m[2], "")), " ")
	}
	for name, want := range map[string]string{
		"api": "service api · keepalive 16 · 3 servers",
		"web": "service web-frontend · hash $cookie_sid consistent · keepalive 32 · 2 servers",
	} {
		if got[name] != want {
			t.Errorf("meta line of %s: %q, want %q", name, got[name], want)
		}
	}
}
