package statuspage

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// healthy is a page where everything is in sync.
func healthy() Page {
	return Page{
		Version:     "1.4.0",
		GeneratedAt: now,
		Sources: []Source{
			{Name: "consul 127.0.0.1:8500", Answered: true},
			{Name: "etcd 127.0.0.1:2379", Answered: true},
		},
		LastApply: now.Add(-42 * time.Second),
		File:      "/etc/nginx/conf.d/swallowkeeper-upstreams.conf",
		Targets: []Target{
			{URL: "http://127.0.0.1:8081", InSync: true, LastSync: now.Add(-3 * time.Second), Upstreams: 2, DriftRepairs: 1},
			{URL: "http://10.0.0.9:8081", InSync: true, LastSync: now.Add(-4 * time.Second), Upstreams: 2,
				LastError: "dial tcp 10.0.0.9:8081: i/o timeout", LastErrorAt: now.Add(-2 * time.Hour)},
		},
		Upstreams: []Upstream{
			{Name: "api", Service: "api", Keepalive: 16, Servers: []Server{
				{Addr: "10.0.1.1:9000", Weight: 1, MaxFails: 3, FailTimeout: 10 * time.Second, Instance: "api-1 on node-a", Tags: []string{"v2"}},
				{Addr: "10.0.1.2:9000", Weight: 1, MaxFails: 3, FailTimeout: 10 * time.Second, Backup: true, Instance: "api-2 on node-b"},
				{Addr: "10.0.1.3:9000", Weight: 1, MaxFails: 3, FailTimeout: 10 * time.Second, Down: true, Instance: "api-3 on node-c", Tags: []string{"maintenance"}},
			}},
			{Name: "web", Service: "web-frontend", Keepalive: 32, Servers: []Server{
				{Addr: "10.0.0.1:8080", Weight: 5, MaxFails: 1, FailTimeout: 30 * time.Second, Instance: "web-1 on node-a", Tags: []string{"zone=a", "gray=stable"}},
				{Addr: "10.0.0.2:8080", Weight: 5, MaxFails: 1, FailTimeout: 30 * time.Second, Instance: "web-2 on node-b", Tags: []string{"zone=b"}},
			}},
		},
		Dropped: []Dropped{{Service: "web-frontend", Instance: "web-9 on node-z", Reason: `address "db.internal" is not an IP literal`}},
	}
}

// holding is healthy with a guard holding changes to web back.
func holding() Page {
	p := healthy()
	p.Holds = []Hold{{Upstream: "web", Reason: "would remove 2 of 2 servers of web (max_remove 50%)", Since: now.Add(-5 * time.Minute)}}
	p.Upstreams[1].Held = true
	return p
}

// broken is healthy with a target that fails and found drift.
func broken() Page {
	p := healthy()
	p.Targets[1].InSync = false
	p.Targets[1].LastError = "dial tcp 10.0.0.9:8081: connect: connection refused"
	p.Targets[1].LastErrorAt = now.Add(-7 * time.Second)
	p.Targets[1].Drift = []string{"api"}
	return p
}

// hostile puts markup into every field a registry can set.
func hostile() Page {
	p := holding()
	const (
		script = `<script>alert(1)</script>`
		img    = `"><img src=x onerror=alert(2)>`
		style  = `</style><script>alert(3)</script>`
		quote  = `web' onmouseover='alert(4)`
	)
	p.Version = script
	p.Sources[0].Name = style
	p.File = img
	p.PersistError = script
	p.Holds = append(p.Holds, Hold{Upstream: script, Reason: img}, Hold{Reason: style})
	p.Targets[0].Drift = []string{script, quote}
	p.Targets[0].LastError = style
	p.Upstreams = append(p.Upstreams, Upstream{Name: script, Service: quote, Servers: []Server{
		{Addr: img, Instance: style, Tags: []string{script, quote, style}},
		{Addr: quote, Instance: img, Tags: []string{`<!--`, `]]>`, `{{.Version}}`}},
	}})
	p.Dropped = append(p.Dropped, Dropped{Service: script, Instance: quote, Reason: style})
	return p
}

func render(t *testing.T, p Page) string {
	t.Helper()
	var b strings.Builder
	if err := Render(&b, p); err != nil {
		t.Fatalf("Render: %v", err)
	}
	return b.String()
}

func TestStateOf(t *testing.T) {
	tests := []struct {
		name  string
		page  Page
		class string
		title string
		why   []string
	}{
		{"everything answered and in sync is green", healthy(), stateOK, "in sync", nil},
		{"an empty page with nothing configured is green", Page{}, stateOK, "in sync", nil},
		{"a hold on one upstream is amber and says why", holding(), stateHold, "holding changes",
			[]string{"held web: would remove 2 of 2 servers"}},
		{"a hold on everything is amber and says so", func() Page {
			p := healthy()
			p.Holds = []Hold{{Reason: "first sync pending"}}
			return p
		}(), stateHold, "holding changes", []string{"held all upstreams: first sync pending"}},
		{"many holds are summed up after the third", func() Page {
			p := healthy()
			for _, n := range []string{"a", "b", "c", "d", "e"} {
				p.Holds = append(p.Holds, Hold{Upstream: n, Reason: "too many removed"})
			}
			return p
		}(), stateHold, "holding changes", []string{"held c: too many removed", "and 2 more held, listed below"}},
		{"a source that has not answered is amber", func() Page {
			p := healthy()
			p.Sources[1].Answered = false
			return p
		}(), stateHold, "holding changes", []string{"waiting for sources: 1 of 2 answered"}},
		{"an unreachable registry is amber and says nginx keeps its state", func() Page {
			p := healthy()
			p.Sources[0].Unreachable = "consul: watch catalog/services: connection refused"
			p.Sources[0].Since = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
			return p
		}(), stateHold, "registry unreachable", []string{"unreachable since 2026-12-01T10:00:00Z (nginx keeps its state): consul: watch catalog/services: connection refused"}},
		{"a target out of sync is red, even while holding", func() Page {
			p := broken()
			p.Holds = holding().Holds
			return p
		}(), stateBad, "target out of sync",
			[]string{"http://10.0.0.9:8081 is not in sync: dial tcp", "held web: would remove"}},
		{"a persist error is red and names the file", func() Page {
			p := healthy()
			p.PersistError = "rename: read-only file system"
			return p
		}(), stateBad, "persist error",
			[]string{"writing /etc/nginx/conf.d/swallowkeeper-upstreams.conf fails", "read-only file system"}},
		{"an old error on a target back in sync stays green", healthy(), stateOK, "in sync", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := stateOf(tt.page)
			if s.Class != tt.class || s.Title != tt.title {
				t.Fatalf("state = %s %q, want %s %q (details %q)", s.Class, s.Title, tt.class, tt.title, s.Details)
			}
			all := strings.Join(s.Details, "\n")
			for _, w := range tt.why {
				if !strings.Contains(all, w) {
					t.Errorf("details %q lack %q", s.Details, w)
				}
			}
			if tt.why == nil && len(s.Details) > 0 {
				t.Errorf("details = %q, want none", s.Details)
			}
		})
	}
}

func TestRender(t *testing.T) {
	tests := []struct {
		name    string
		page    Page
		want    []string
		wantNot []string
	}{
		{
			name: "a healthy page shows every upstream, server, instance, tag, target and source",
			page: healthy(),
			want: []string{
				`<header class="banner ok"`, `<h1>in sync</h1>`, "swallowkeeper 1.4.0",
				"consul 127.0.0.1:8500", "etcd 127.0.0.1:2379", "2 of 2 answered",
				"/etc/nginx/conf.d/swallowkeeper-upstreams.conf", "42s ago",
				`id="u-api"`, `id="u-web"`, "web-frontend", "keepalive 32", "keepalive 16",
				"10.0.1.1:9000", "10.0.1.2:9000", "10.0.1.3:9000", "10.0.0.1:8080", "10.0.0.2:8080",
				"api-1 on node-a", "api-2 on node-b", "api-3 on node-c", "web-1 on node-a", "web-2 on node-b",
				`<span class="tag">zone=a</span>`, `<span class="tag">gray=stable</span>`, `<span class="tag">maintenance</span>`,
				`<span class="pill">backup</span>`, `<span class="pill bad">down</span>`, "30s",
				"http://127.0.0.1:8081", "http://10.0.0.9:8081", `<span class="pill ok">in sync</span>`,
				`<span class="old">dial tcp 10.0.0.9:8081: i/o timeout</span>`, "2h0m ago",
				"Registry entries ignored (1)", "web-9 on node-z", "is not an IP literal",
				"No guard is holding changes back.",
			},
			wantNot: []string{"no upstreams yet", `http-equiv="refresh"`, "not in sync", `class="pill hold"`},
		},
		{
			name: "a hold is listed with its upstream, reason and age, and marks the upstream",
			page: holding(),
			want: []string{
				`<header class="banner hold"`, "<h1>holding changes</h1>", "<li>held web: would remove 2 of 2 servers of web (max_remove 50%)</li>",
				`<section class="card holds" id="holds">`, "Changes held back (1)",
				`<a href="#u-web"><code>web</code></a>`, "would remove 2 of 2 servers of web (max_remove 50%)", "5m0s ago",
				`<code>web</code> <span class="pill hold">held</span>`, `<p class="why-held">held: would remove 2 of 2`,
			},
			wantNot: []string{"No guard is holding changes back."},
		},
		{
			name: "a hold on everything says so and marks every upstream",
			page: func() Page {
				p := healthy()
				p.Holds = []Hold{{Reason: "waiting for the first sync of every target"}}
				return p
			}(),
			want: []string{"<strong>all upstreams</strong>", `<code>api</code> <span class="pill hold">held</span>`,
				`<code>web</code> <span class="pill hold">held</span>`, `<span class="old">unknown</span>`},
		},
		{
			name: "a target out of sync shows its error and the drift it found",
			page: broken(),
			want: []string{
				`<header class="banner bad"`, "<h1>target out of sync</h1>", `<span class="pill bad">not in sync</span>`,
				`<span class="err">dial tcp 10.0.0.9:8081: connect: connection refused</span>`, "7s ago",
				`<a href="#u-api"><code>api</code></a>`, `<span class="pill bad">drift</span>`,
				"differed on <code>http://10.0.0.9:8081</code> at the last check",
			},
		},
		{
			name: "a persist error is shown next to the file",
			page: func() Page {
				p := healthy()
				p.PersistError = "open /etc/nginx/conf.d/.tmp123: permission denied"
				return p
			}(),
			want: []string{"<h1>persist error</h1>", `<span class="err">write failing: open /etc/nginx/conf.d/.tmp123: permission denied</span>`},
		},
		{
			name: "an empty page renders and says there are no upstreams yet",
			page: Page{GeneratedAt: now},
			want: []string{"<h1>in sync</h1>", "no upstreams yet", "0 of 0 answered", "No nginx targets configured.",
				`<span class="old">never</span>`, "not persisted", "Upstreams (0)"},
			wantNot: []string{`<tr class="server">`, `id="dropped"`},
		},
		{
			name: "sources still missing are listed as waiting",
			page: func() Page {
				p := healthy()
				p.Sources[1].Answered = false
				return p
			}(),
			want: []string{"1 of 2 answered", `<span class="pill hold">waiting</span><code>etcd 127.0.0.1:2379</code>`,
				"waiting for sources: 1 of 2 answered"},
		},
		{
			name: "a refresh interval adds the meta refresh",
			page: func() Page {
				p := healthy()
				p.Refresh = 5 * time.Second
				return p
			}(),
			want: []string{`<meta http-equiv="refresh" content="5">`, "reloads every 5s"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := render(t, tt.page)
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q", w)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(out, w) {
					t.Errorf("output has %q", w)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}

// TestRenderRowsMatchServers checks the structure: one table row per server
// and one section per upstream, in the order given.
func TestRenderRowsMatchServers(t *testing.T) {
	for name, p := range map[string]Page{"healthy": healthy(), "hostile": hostile()} {
		t.Run(name, func(t *testing.T) {
			out := render(t, p)
			sections := regexp.MustCompile(`<section class="upstream" id="u-([^"]*)">`).FindAllStringSubmatchIndex(out, -1)
			if len(sections) != len(p.Upstreams) {
				t.Fatalf("%d upstream sections, want %d", len(sections), len(p.Upstreams))
			}
			for i, u := range p.Upstreams {
				end := len(out)
				if i+1 < len(sections) {
					end = sections[i+1][0]
				}
				part := out[sections[i][0]:end]
				if got := strings.Count(part, `<tr class="server">`); got != len(u.Servers) {
					t.Errorf("upstream %d (%q): %d server rows, want %d", i, u.Name, got, len(u.Servers))
				}
			}
		})
	}
}

// TestRenderEscapesRegistryStrings puts markup into every field and checks
// that none of it becomes markup.
func TestRenderEscapesRegistryStrings(t *testing.T) {
	out := render(t, hostile())
	for _, bad := range []string{"<script", "<img", "<!--", "onmouseover='", "alert(2)>"} {
		if strings.Contains(out, bad) {
			i := strings.Index(out, bad)
			t.Errorf("output contains %q unescaped: ...%s...", bad, out[max(0, i-80):min(len(out), i+80)])
		}
	}
	if n := strings.Count(out, "<style>"); n != 1 {
		t.Errorf("%d <style> tags, want 1", n)
	}
	if n := strings.Count(out, "</style>"); n != 1 {
		t.Errorf("%d </style> tags, want 1", n)
	}
	for _, want := range []string{
		"&lt;script&gt;alert(1)&lt;/script&gt;",
		"&#34;&gt;&lt;img src=x onerror=alert(2)&gt;",
		"&lt;/style&gt;&lt;script&gt;alert(3)&lt;/script&gt;",
		"web&#39; onmouseover=&#39;alert(4)",
		`<span class="tag">&lt;!--</span>`,
		`<span class="tag">{{.Version}}</span>`,
		`id="u-&lt;script&gt;alert(1)&lt;/script&gt;"`,
		`href="#u-%3cscript%3ealert%281%29%3c%2fscript%3e"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks escaped %q", want)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

func TestAgo(t *testing.T) {
	tests := []struct {
		name string
		t    time.Time
		want string
	}{
		{"a zero time was never", time.Time{}, "never"},
		{"under a second is just now", now.Add(-300 * time.Millisecond), "just now"},
		{"seconds are rounded", now.Add(-(12*time.Second + 600*time.Millisecond)), "13s ago"},
		{"minutes keep their seconds", now.Add(-(3*time.Minute + 4*time.Second)), "3m4s ago"},
		{"hours drop the seconds", now.Add(-(26*time.Hour + 5*time.Minute + 9*time.Second)), "26h5m ago"},
		{"a time ahead of the clock says so", now.Add(90 * time.Second), "in 1m30s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ago(now, tt.t); got != tt.want {
				t.Errorf("ago = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRenderReportsWriteErrors(t *testing.T) {
	err := Render(failWriter{}, healthy())
	if err == nil || !strings.HasPrefix(err.Error(), "statuspage: render: ") {
		t.Fatalf("err = %v, want a statuspage: render: error", err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestHandler(t *testing.T) {
	calls := 0
	h := Handler(func() Page {
		calls++
		p := holding()
		p.GeneratedAt = time.Time{} // the handler fills it
		return p
	})
	srv := httptest.NewServer(h)
	defer srv.Close()

	t.Run("GET serves the page, uncached, with a strict policy", func(t *testing.T) {
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %s", resp.Status)
		}
		for k, want := range map[string]string{
			"Content-Type":           "text/html; charset=utf-8",
			"Cache-Control":          "no-store",
			"X-Content-Type-Options": "nosniff",
		} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("%s = %q, want %q", k, got, want)
			}
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script-src") {
			t.Errorf("Content-Security-Policy = %q", csp)
		}
		if !bytes.Contains(body, []byte("would remove 2 of 2 servers")) || !bytes.Contains(body, []byte("</html>")) {
			t.Errorf("body is not the whole page:\n%s", body)
		}
		if bytes.Contains(body, []byte(`datetime="0001-`)) || bytes.Contains(body, []byte("<time datetime=\"\">")) {
			t.Errorf("GeneratedAt was not filled:\n%s", body)
		}
	})
	t.Run("HEAD sends the headers and no body", func(t *testing.T) {
		resp, err := http.Head(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || len(body) != 0 || resp.ContentLength <= 0 {
			t.Fatalf("status %s, %d body bytes, Content-Length %d", resp.Status, len(body), resp.ContentLength)
		}
		if got := resp.Header.Get("Content-Type"); got != "text/html; charset=utf-8" {
			t.Errorf("Content-Type = %q", got)
		}
	})
	t.Run("other methods are refused without building the page", func(t *testing.T) {
		before := calls
		for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
			req, _ := http.NewRequest(m, srv.URL, strings.NewReader("x"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("%s: status %s, Allow %q", m, resp.Status, resp.Header.Get("Allow"))
			}
		}
		if calls != before {
			t.Errorf("get was called %d times for refused requests", calls-before)
		}
	})
}
