package config

import (
	"bufio"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// The configuration reference (docs/CONFIGURATION.md) lists every key with
// its default. This test walks the Config struct and Default(), so the
// reference cannot drift from the code: a key added, removed or renamed,
// or a default changed, fails here until the document follows.

const referencePath = "../../docs/CONFIGURATION.md"

// referenceRow matches "| `key` | `default` | description |".
var referenceRow = regexp.MustCompile("^\\| `([a-z0-9_.\\[\\]<>]+)` \\| `([^`]*)` \\|")

func TestReferenceMatchesCode(t *testing.T) {
	want := map[string]string{}
	walkKeys(reflect.ValueOf(Default()), "", want)

	f, err := os.Open(referencePath)
	if err != nil {
		t.Fatalf("the configuration reference is missing: %v", err)
	}
	defer f.Close()
	got := map[string]string{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		m := referenceRow.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		if _, dup := got[m[1]]; dup {
			t.Errorf("%s:%d: key %s documented twice", referencePath, line, m[1])
		}
		got[m[1]] = m[2]
	}
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		doc, ok := got[k]
		switch {
		case !ok:
			t.Errorf("%s: key %s is not documented (default `%s`)", referencePath, k, want[k])
		case doc != want[k]:
			t.Errorf("%s: key %s documents default `%s`, the code has `%s`", referencePath, k, doc, want[k])
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: documents key %s, which the configuration does not have", referencePath, k)
		}
	}
	if len(want) < 40 {
		t.Fatalf("walked only %d keys: the walker is broken", len(want))
	}
}

// TestExampleHasEveryKey: the commented example configuration shows every
// key, and parses.
func TestExampleHasEveryKey(t *testing.T) {
	const example = "../../examples/swallowkeeper.yml"
	data, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(example, data); err != nil {
		t.Fatal(err)
	}
	c, _ := Parse(example, data)
	want := map[string]string{}
	walkKeys(reflect.ValueOf(Default()), "", want)
	for k := range want {
		field := strings.ReplaceAll(strings.ReplaceAll(k, "[]", "[0]"), "<name>", "web")
		if _, ok := c.lines[field]; !ok {
			t.Errorf("%s does not show key %s", example, k)
		}
	}
}

// walkKeys records every YAML key under prefix with its default, rendered
// as the reference writes it.
func walkKeys(v reflect.Value, prefix string, out map[string]string) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if !f.IsExported() || tag == "-" || tag == "" {
			continue
		}
		key := tag
		if prefix != "" {
			key = prefix + "." + tag
		}
		fv := v.Field(i)
		switch {
		case f.Type == reflect.TypeOf(Duration(0)):
			out[key] = shortDuration(time.Duration(fv.Int()))
		case f.Type.Kind() == reflect.Struct:
			walkKeys(fv, key, out)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			walkKeys(reflect.New(f.Type.Elem()).Elem(), key+"[]", out)
		case f.Type.Kind() == reflect.Map && f.Type.Elem().Kind() == reflect.Struct:
			walkKeys(reflect.New(f.Type.Elem()).Elem(), key+".<name>", out)
		default:
			out[key] = literal(fv)
		}
	}
}

func literal(v reflect.Value) string {
	switch v.Kind() {
	case reflect.String:
		if v.String() == "" {
			return `""`
		}
		return v.String()
	case reflect.Slice:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = literal(v.Index(i))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case reflect.Pointer:
		if v.IsNil() {
			return "unset"
		}
		return literal(v.Elem())
	}
	return fmt.Sprint(v.Interface())
}

// shortDuration writes 5m instead of 5m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "0s", time.Second: "1s", 5 * time.Minute: "5m", time.Hour: "1h", 90 * time.Second: "1m30s", 100 * time.Millisecond: "100ms"} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
