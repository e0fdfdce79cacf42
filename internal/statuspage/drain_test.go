package statuspage

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestPageListsDrainedServers: a drain shows with its server and age, an
// inactive one with why, and a hostile name stays text.
func TestPageListsDrainedServers(t *testing.T) {
	p := healthy()
	var buf bytes.Buffer
	if err := Render(&buf, p); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), `id="drains"`) {
		t.Fatal("a page without drains has a drains section")
	}
	p.Drains = []Drain{
		{Upstream: "web", Address: "10.0.0.1:8080", Since: now.Add(-90 * time.Second), Active: true},
		{Upstream: "<b>x</b>", Address: "10.0.9.9:80", Since: now.Add(-time.Minute), Note: "10.0.9.9:80 is not a server of x now"},
	}
	buf.Reset()
	if err := Render(&buf, p); err != nil {
		t.Fatal(err)
	}
	html := buf.String()
	for _, want := range []string{`id="drains"`, "Drained by hand (2)", "<code>10.0.0.1:8080</code>", `<span class="pill hold">down</span>`,
		"not applied: 10.0.9.9:80 is not a server of x now", "&lt;b&gt;x&lt;/b&gt;", "swallowkeeper undrain UPSTREAM IP:PORT"} {
		if !strings.Contains(html, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(html, "<b>x</b>") {
		t.Error("an upstream name reached the page unescaped")
	}
}
