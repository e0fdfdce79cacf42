package split

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		name string
		up   string
		rule Rule
		want []string // substrings of the problems, in order; none = valid
	}{
		{"a plain share is valid", "web", Rule{To: "web_canary", Percent: 10}, nil},
		{"0, 100 and two decimals are valid", "web", Rule{To: "web_canary", Percent: 12.25}, nil},
		{"a full rule is valid", "web", Rule{To: "web_green", Percent: 100, Sticky: "cookie:sid",
			Match: Match{Header: Values{"X-Canary": "1"}, Cookie: Values{"beta": "yes"}}}, nil},
		{"sticky addr and header are valid", "web", Rule{To: "web_b", Sticky: "header:X-User"}, nil},
		{"a missing group is refused", "web", Rule{Percent: 10}, []string{"to: the group's upstream is required, e.g. web_canary"}},
		{"a group named like nginx config is refused", "web", Rule{To: "web;x"}, []string{"to: "}},
		{"the split's own upstream is refused", "web", Rule{To: "WEB"}, []string{`to: "WEB" is the split's own upstream`}},
		{"more than 100 is refused", "web", Rule{To: "web_b", Percent: 100.5}, []string{"percent: 100.5: want 0 to 100"}},
		{"a negative share is refused", "web", Rule{To: "web_b", Percent: -1}, []string{"percent: -1"}},
		{"three decimals are refused", "web", Rule{To: "web_b", Percent: 1.234}, []string{"at most two decimals"}},
		{"an unknown sticky kind is refused", "web", Rule{To: "web_b", Sticky: "ip"}, []string{`sticky: "ip": want addr, header:NAME or cookie:NAME`}},
		{"a sticky header without a name is refused", "web", Rule{To: "web_b", Sticky: "header:"}, []string{"sticky: "}},
		{"a sticky cookie name with a space is refused", "web", Rule{To: "web_b", Sticky: "cookie:a b"}, []string{"token characters"}},
		{"a header name outside the token alphabet is refused", "web", Rule{To: "web_b", Match: Match{Header: Values{"X(1)": "1"}}}, []string{"match.header.X(1): "}},
		{"a value with a space is refused", "web", Rule{To: "web_b", Match: Match{Cookie: Values{"c": "a b"}}}, []string{`match.cookie.c: "a b": a value is`}},
		{"an empty value is refused", "web", Rule{To: "web_b", Match: Match{Header: Values{"X": ""}}}, []string{"match.header.X"}},
		{"a control character in a value is refused", "web", Rule{To: "web_b", Match: Match{Header: Values{"X": "1\nto evil"}}}, []string{"match.header.X"}},
		{"header names differing in case only are refused", "web", Rule{To: "web_b", Match: Match{Header: Values{"X-A": "1", "x-a": "2"}}}, []string{"case-insensitive"}},
		{"an invalid split name is refused", "we b", Rule{To: "web_b"}, []string{"we b", "not a group of we b"}},
		// A split may only move a service's traffic to its own groups:
		// a rule writer must not reach another service's backends.
		{"another service's upstream is refused", "web", Rule{To: "admin", Percent: 100}, []string{`to: "admin" is not a group of web: a split sends requests only to an upstream named web_<group>`}},
		{"a name that only starts like the split's is refused", "web", Rule{To: "webadmin"}, []string{"not a group of web"}},
		{"the bare prefix is refused", "web", Rule{To: "web_"}, []string{"not a group of web"}},
		{"a group of a longer name is refused", "web", Rule{To: "web.v2_canary"}, []string{"not a group of web"}},
		{"a group differing in case is valid", "Web.v2", Rule{To: "WEB.V2_Canary", Percent: 1}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Check(c.up, c.rule)
			if len(got) != len(c.want) {
				t.Fatalf("problems %v, want %d matching %q", got, len(c.want), c.want)
			}
			for i, p := range got {
				if !strings.Contains(p.Error(), c.want[i]) {
					t.Errorf("problem %q, want it to contain %q", p.Error(), c.want[i])
				}
			}
		})
	}
}

func TestCheckTable(t *testing.T) {
	got := CheckTable(Table{
		"web":        {To: "web_canary", Percent: 10},
		"web_canary": {To: "web_canary_2", Percent: 10},
		"api":        {To: "api", Percent: 200},
	})
	want := []string{
		`api.to: "api" is the split's own upstream`,
		"api.percent: 200",
		`web.to: "web_canary" has a split of its own`,
	}
	if len(got) != len(want) {
		t.Fatalf("problems %v, want %q", got, want)
	}
	for i, p := range got {
		if !strings.HasPrefix(p.Error(), want[i]) {
			t.Errorf("problem %q, want prefix %q", p.Error(), want[i])
		}
	}
}

// TestBody: the text sent to the Lua module is what its GET answers
// (nginx/split_test.go, TestSplitAPI, checks the Lua side of the same
// example), so that a target holding the rule compares equal.
func TestBody(t *testing.T) {
	for _, c := range []struct {
		name string
		rule Rule
		want string
	}{
		{"a share alone", Rule{To: "web_canary", Percent: 10}, "to web_canary\npercent 10\n"},
		{"no share", Rule{To: "g"}, "to g\npercent 0\n"},
		{"decimals as the Lua module writes them", Rule{To: "g", Percent: 0.5}, "to g\npercent 0.5\n"},
		{"the TestSplitAPI example", Rule{To: "web_canary", Percent: 12.5, Sticky: "cookie:sid",
			Match: Match{Header: Values{"X-Canary": "1", "A-First": "on"}, Cookie: Values{"beta": "yes"}}},
			"to web_canary\npercent 12.5\nsticky cookie sid\nheader A-First on\nheader X-Canary 1\ncookie beta yes\n"},
		{"sticky addr has no name", Rule{To: "g", Percent: 33.33, Sticky: "addr"}, "to g\npercent 33.33\nsticky addr\n"},
		{"headers sort without case", Rule{To: "g", Match: Match{Header: Values{"b": "1", "A": "2"}}}, "to g\npercent 0\nheader A 2\nheader b 1\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := Body(c.rule); got != c.want {
				t.Errorf("Body = %q, want %q", got, c.want)
			}
		})
	}
}

func TestParseList(t *testing.T) {
	got, err := ParseList("split Web\nto a\npercent 1\n\nsplit api\nto b\npercent 0\nheader X 1\n\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["web"] != "to a\npercent 1\n" || got["api"] != "to b\npercent 0\nheader X 1\n" {
		t.Errorf("ParseList = %q", got)
	}
	if got, err := ParseList(""); err != nil || len(got) != 0 {
		t.Errorf("empty answer: %v, %v", got, err)
	}
	if _, err := ParseList("to a\npercent 1\n\n"); err == nil {
		t.Error("a rule without its split line was accepted")
	}
}

func TestParseJSON(t *testing.T) {
	r, err := ParseJSON("web", []byte(`{"to":"web_canary","percent":10,"sticky":"cookie:sid","match":{"header":{"X-Canary":"1"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if Body(r) != "to web_canary\npercent 10\nsticky cookie sid\nheader X-Canary 1\n" {
		t.Errorf("rule %+v", r)
	}
	for _, c := range []struct{ name, data, want string }{
		{"an unknown field is refused", `{"to":"g","percnt":10}`, `unknown field "percnt"`},
		{"a share out of range is refused", `{"to":"g","percent":150}`, "percent: 150"},
		{"a missing group is refused", `{"percent":5}`, "to: the group's upstream is required"},
		{"trailing data is refused", `{"to":"g"} {}`, "data after"},
		{"not JSON is refused", `to g`, "invalid character"},
		{"a percent as a string is refused", `{"to":"g","percent":"10"}`, "cannot unmarshal"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseJSON("web", []byte(c.data))
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "split web: ") {
				t.Errorf("ParseJSON(%s) = %v, want an error naming the split and containing %q", c.data, err, c.want)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	got := Describe(Rule{To: "web_canary", Percent: 10, Sticky: "cookie:sid", Match: Match{Header: Values{"X-Canary": "1"}}})
	if want := "10% to web_canary (sticky cookie:sid); header X-Canary=1 → web_canary"; got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}
	if got := (Values{}).String(); got != "{}" {
		t.Errorf("empty Values = %q, want {}", got)
	}
}
