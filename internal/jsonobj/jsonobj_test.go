package jsonobj

import (
	"strings"
	"testing"
)

func TestObject(t *testing.T) {
	tests := []struct {
		in, err string
		keys    int
	}{
		{`{"a":1,"b":"x"}`, "", 2},
		{`{}`, "", 0},
		{`{"a":1,"a":2}`, `key "a" appears twice`, 0},
		{`{"a":1} {"b":2}`, "data after the JSON object", 0},
		{`[1,2]`, "not a JSON object", 0},
		{"\xff", "not valid UTF-8", 0},
		{`{"a":`, "bad JSON", 0},
		{``, "not JSON", 0},
	}
	for _, tt := range tests {
		m, err := Object([]byte(tt.in))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("Object(%q) error %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || len(m) != tt.keys {
			t.Errorf("Object(%q) = %v, %v; want %d keys", tt.in, m, err, tt.keys)
		}
	}
}

func TestFields(t *testing.T) {
	f, err := Object([]byte(`{"s":"x","n":7,"big":4294967296,"frac":1.5,"b":true,"nul":null,"l":["a","b"],"bad":["a",1],"m":{"k":"v"},"W":1,"w":2,"K":3}`))
	if err != nil {
		t.Fatal(err)
	}
	if s, ok, err := String(f, "s"); s != "x" || !ok || err != nil {
		t.Errorf("String: %q %v %v", s, ok, err)
	}
	if _, ok, err := String(f, "nul"); ok || err != nil {
		t.Errorf("null string: %v %v", ok, err)
	}
	if _, _, err := String(f, "n"); err == nil || !strings.Contains(err.Error(), "n is a number, want a string") {
		t.Errorf("String of a number: %v", err)
	}
	if n, ok, err := Int(f, "n"); n != 7 || !ok || err != nil {
		t.Errorf("Int: %d %v %v", n, ok, err)
	}
	for _, key := range []string{"big", "frac"} {
		if _, _, err := Int(f, key); err == nil || !strings.Contains(err.Error(), "not a 32-bit integer") {
			t.Errorf("Int(%s): %v", key, err)
		}
	}
	if b, ok, err := Bool(f, "b"); !b || !ok || err != nil {
		t.Errorf("Bool: %v %v %v", b, ok, err)
	}
	if l, err := StringList(f, "l"); err != nil || strings.Join(l, ",") != "a,b" {
		t.Errorf("StringList: %v %v", l, err)
	}
	if _, err := StringList(f, "bad"); err == nil || !strings.Contains(err.Error(), "bad[1] is a number") {
		t.Errorf("StringList with a number: %v", err)
	}
	if m, err := StringMap(f, "m"); err != nil || m["k"] != "v" {
		t.Errorf("StringMap: %v %v", m, err)
	}
	if _, err := FoldField(f, "w"); err == nil || !strings.Contains(err.Error(), "appears twice") {
		t.Errorf("FoldField with W and w: %v", err)
	}
	if v, err := FoldField(f, "k"); err != nil || string(v) != "3" {
		t.Errorf("FoldField(k) = %s, %v", v, err)
	}
	if v, err := FoldField(f, "\u212a"); err != nil || v != nil { // Kelvin sign is not k
		t.Errorf("FoldField(Kelvin) = %s, %v", v, err)
	}
	if c := Clip(strings.Repeat("x", 100)); len(c) > 70 || !strings.HasSuffix(c, "…") {
		t.Errorf("Clip: %s", c)
	}
}
