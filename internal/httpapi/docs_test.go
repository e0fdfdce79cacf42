package httpapi

import (
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/dyups"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/reload"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/splits"
)

const operationsDoc = "../../docs/OPERATIONS.md"

// documentedStatusFields reads the field table of OPERATIONS.md's
// "/status fields" section: the first code span of each row.
func documentedStatusFields(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "\n### `/status` fields")
	if start < 0 {
		t.Fatalf("%s has no \"### `/status` fields\" section", operationsDoc)
	}
	text = text[start+1:]
	if end := strings.Index(text[3:], "\n#"); end >= 0 {
		text = text[:end+3]
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z_.\\[\\]]+)` \\|")
	out := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(text, -1) {
		out[m[1]] = true
	}
	if len(out) == 0 {
		t.Fatalf("the /status fields section of %s has no table rows", operationsDoc)
	}
	return out
}

var (
	timeType     = reflect.TypeFor[time.Time]()
	durationType = reflect.TypeFor[Duration]()
)

// jsonPaths adds the JSON paths of t's fields under prefix: "a" for a
// member, "a[]" stands for the elements of an array, "a.b" for a member of
// an object. Times and durations are leaves; embedded structs add their
// fields at the same level.
func jsonPaths(t reflect.Type, prefix string, out map[string]bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct && t.Elem() != timeType {
		jsonPaths(t.Elem(), prefix+"[]", out)
		return
	}
	if t.Kind() != reflect.Struct || t == timeType || t == durationType {
		return
	}
	for f := range t.Fields() {
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			jsonPaths(f.Type, prefix, out)
			continue
		}
		if name == "" {
			name = f.Name
		}
		p := name
		if prefix != "" {
			p = prefix + "." + name
		}
		out[p] = true
		jsonPaths(f.Type, p, out)
	}
}

// emittedStatusFields is every key /status can carry: the document, each
// sink's entry (the common fields and a dyups target's), and reload mode's
// section.
func emittedStatusFields() map[string]bool {
	out := map[string]bool{}
	jsonPaths(reflect.TypeFor[document[json.RawMessage]](), "", out)
	jsonPaths(reflect.TypeFor[sinkEntry](), "targets[]", out)
	jsonPaths(reflect.TypeFor[dyups.StatusDetail](), "targets[]", out)
	out["reload"] = true
	jsonPaths(reflect.TypeFor[reload.Status](), "reload", out)
	out["splits"] = true
	jsonPaths(reflect.TypeFor[splits.Status](), "splits", out)
	return out
}

// walkJSON adds the paths of a JSON value as jsonPaths names them.
func walkJSON(v any, prefix string, out map[string]bool) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			out[p] = true
			walkJSON(e, p, out)
		}
	case []any:
		for _, e := range v {
			if _, ok := e.(map[string]any); ok {
				walkJSON(e, prefix+"[]", out)
			}
		}
	}
}

// TestStatusFieldsAreDocumented: the table of /status fields in
// OPERATIONS.md names every key the daemon can emit, and nothing else.
func TestStatusFieldsAreDocumented(t *testing.T) {
	documented := documentedStatusFields(t)
	emitted := emittedStatusFields()
	for _, p := range slices.Sorted(maps.Keys(emitted)) {
		if !documented[p] {
			t.Errorf("/status emits %q; %s does not document it", p, operationsDoc)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(documented)) {
		if !emitted[p] {
			t.Errorf("%s documents %q; /status has no such field", operationsDoc, p)
		}
	}
}

// TestStatusAnswerHasOnlyKnownFields: a real /status answer (a dyups
// target, reload mode failing) carries no key the types above do not
// declare, so that the reflection of TestStatusFieldsAreDocumented sees
// all there is.
func TestStatusAnswerHasOnlyKnownFields(t *testing.T) {
	h := statusDaemonForKeys(t)
	code, body := get(t, h, "/status")
	if code != 200 {
		t.Fatalf("/status answered %d: %s", code, body)
	}
	var v any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	walkJSON(v, "", seen)
	emitted := emittedStatusFields()
	for _, p := range slices.Sorted(maps.Keys(seen)) {
		if !emitted[p] {
			t.Errorf("/status answered with %q, which no type declares:\n%s", p, body)
		}
	}
	if len(seen) < 10 {
		t.Errorf("walked only %v", seen)
	}
}

// statusDaemonForKeys is a daemon with a dyups target and a reload sink
// whose test failed, so that their optional fields are set.
func statusDaemonForKeys(t *testing.T) http.Handler {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tg, err := dyups.NewTarget("http://127.0.0.1:1", dyups.DefaultOptions(), log, dyups.NewMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := reload.New(reload.Options{Command: []string{"nginx", "-s", "reload"}}, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	rs.Persisted(engine.ErrVerifyFailed, time.Now().Add(time.Second))
	return daemon(t, tg, rs)
}
