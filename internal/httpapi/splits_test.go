package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/dyups"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/splits"
	"github.com/swallowkeeper/swallowkeeper/internal/split"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// TestStatusShowsSplits: /status carries the rules under "splits" (and no
// extra target entry), `status` prints them with where they are pushed,
// and the status page lists them; a real dyups target (GET /split → 404)
// is named as not carrying them.
func TestStatusShowsSplits(t *testing.T) {
	realDyups := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(404) }))
	t.Cleanup(realDyups.Close)
	base, err := dyups.ParseBaseURL(realDyups.URL)
	if err != nil {
		t.Fatal(err)
	}
	rules := split.Table{"web": {To: "web_canary", Percent: 12.5, Sticky: "cookie:sid", Match: split.Match{Header: split.Values{"X-Canary": "1"}}}}
	ss := splits.New([]splits.Target{{URL: base}}, rules, splits.Options{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ss.Update(engine.Change{State: upstream.State{}}) // nginx holds no web_canary; the sink syncs once it has a state
	if err := ss.SyncAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := daemon(t, ss)

	code, body := get(t, h, "/status")
	if code != 200 {
		t.Fatalf("/status: %d %s", code, body)
	}
	var doc Doc
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Targets) != 0 {
		t.Errorf("the split sink shows as a target: %+v", doc.Targets)
	}
	if doc.Splits == nil || len(doc.Splits.Rules) != 1 || doc.Splits.Rules[0].To != "web_canary" || !doc.Splits.Rules[0].GroupMissing {
		t.Fatalf("/status splits: %+v\n%s", doc.Splits, body)
	}

	var out bytes.Buffer
	if err := Print(&out, []byte(body)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Splits:",
		"web → web_canary  12.5% sticky cookie:sid  header X-Canary=1  from config  no upstream web_canary: every request stays on web",
		realDyups.URL + ": not pushed: " + splits.NoSplitAPI,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status text lacks %q:\n%s", want, out.String())
		}
	}

	_, page := get(t, h, "/")
	for _, want := range []string{`id="splits"`, "<code>web_canary</code>", "12.5%", "not pushed to " + realDyups.URL} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
}
