package upstream

import (
	"strings"
	"testing"
)

func TestParseBalance(t *testing.T) {
	tests := []struct {
		in   string
		want Balance
		ok   bool
	}{
		{"", Balance{}, true},
		{"round_robin", Balance{}, true},
		{"least_conn", Balance{Method: LeastConn}, true},
		{"ip_hash", Balance{Method: IPHash}, true},
		{"hash $remote_addr", Balance{Method: Hash, Key: "$remote_addr"}, true},
		{"  hash   $cookie_x   consistent ", Balance{Method: Hash, Key: "$cookie_x", Consistent: true}, true},
		{"hash $host:$request_uri", Balance{Method: Hash, Key: "$host:$request_uri"}, true},
		{"hash v1/$arg_user-$http_x_tenant.x", Balance{Method: Hash, Key: "v1/$arg_user-$http_x_tenant.x"}, true},
		{"random", Balance{}, false},
		{"least_conn x", Balance{}, false},
		{"ip_hash consistent", Balance{}, false},
		{"hash", Balance{}, false},
		{"hash $x consistent extra", Balance{}, false},
		{"hash $x sticky", Balance{}, false},
		{"hash constant", Balance{}, false},
		{"hash $", Balance{}, false},
		{"hash $1", Balance{}, false},
		{"hash ${host}", Balance{}, false},
		{"hash $host;", Balance{}, false},
		{"hash $host;server", Balance{}, false},
		{"hash $host}", Balance{}, false},
		{"hash $host{", Balance{}, false},
		{"hash \"$host\"", Balance{}, false},
		{"hash '$host'", Balance{}, false},
		{"hash $host#", Balance{}, false},
		{"hash $host\\", Balance{}, false},
		{"hash $hoßt", Balance{}, false},
		{"hash $" + strings.Repeat("a", MaxHashKeyLen), Balance{}, false},
	}
	for _, tt := range tests {
		got, err := ParseBalance(tt.in)
		if (err == nil) != tt.ok || tt.ok && got != tt.want {
			t.Errorf("ParseBalance(%q) = %+v, %v; want %+v ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestBalanceValidateRefusesHandBuiltValues(t *testing.T) {
	for _, b := range []Balance{
		{Method: "random"},
		{Method: LeastConn, Key: "$x"},
		{Method: IPHash, Consistent: true},
		{Method: Hash},
		{Method: Hash, Key: "$x;\nserver 10.0.0.9:80"},
	} {
		if err := b.Validate(); err == nil {
			t.Errorf("%+v validated", b)
		}
		u := ups("web", 0, srv("10.0.0.1:80", 1))
		u.Balance = b
		if err := u.Validate(); err == nil {
			t.Errorf("upstream with %+v validated", b)
		}
	}
}

func TestBackupRefusedUnderHashMethods(t *testing.T) {
	backup := srv("10.0.0.2:80", 1)
	backup.Backup = true
	for _, tt := range []struct {
		b  Balance
		ok bool
	}{
		{Balance{}, true},
		{Balance{Method: LeastConn}, true},
		{Balance{Method: IPHash}, false},
		{Balance{Method: Hash, Key: "$remote_addr"}, false},
		{Balance{Method: Hash, Key: "$remote_addr", Consistent: true}, false},
	} {
		u := ups("web", 0, srv("10.0.0.1:80", 1), backup)
		u.Balance = tt.b
		if err := u.Validate(); (err == nil) != tt.ok {
			t.Errorf("%v with a backup server: %v, want ok=%v", tt.b, err, tt.ok)
		}
	}
}

func TestBalanceRendersFirstAndParsesBack(t *testing.T) {
	for _, tt := range []struct {
		b    Balance
		line string
	}{
		{Balance{}, ""},
		{Balance{Method: LeastConn}, "least_conn;\n"},
		{Balance{Method: IPHash}, "ip_hash;\n"},
		{Balance{Method: Hash, Key: "$cookie_sid"}, "hash $cookie_sid;\n"},
		{Balance{Method: Hash, Key: "$remote_addr", Consistent: true}, "hash $remote_addr consistent;\n"},
	} {
		u := ups("web", 8, srv("10.0.0.1:80", 2), srv("10.0.0.2:80", 1))
		u.Balance = tt.b
		body := u.Body()
		want := tt.line + "server 10.0.0.1:80 weight=2 max_fails=3 fail_timeout=10s;\n" +
			"server 10.0.0.2:80 weight=1 max_fails=3 fail_timeout=10s;\nkeepalive 8;\n"
		if body != want {
			t.Errorf("%v: body\n%s\nwant\n%s", tt.b, body, want)
		}
		back, err := ParseBody("web", body)
		if err != nil {
			t.Fatalf("%v: ParseBody: %v", tt.b, err)
		}
		if !back.Equal(u) || back.Balance != tt.b {
			t.Errorf("%v: parsed back as %+v", tt.b, back.Balance)
		}
		st, err := ParseFile(RenderFile(State{"web": u}))
		if err != nil || !st.Equal(State{"web": u}) {
			t.Errorf("%v: file round trip: %v, %+v", tt.b, err, st["web"].Balance)
		}
	}
}

func TestEqualSeesTheBalance(t *testing.T) {
	a := ups("web", 0, srv("10.0.0.1:80", 1))
	b := a // shares the server list: Equal's fast path must not hide the method
	b.Balance = Balance{Method: Hash, Key: "$remote_addr"}
	if a.Equal(b) {
		t.Error("round robin and hash compare equal")
	}
	c := b
	c.Balance.Consistent = true
	if b.Equal(c) {
		t.Error("hash and consistent hash compare equal")
	}
	d := c
	d.Balance.Key = "$cookie_x"
	if c.Equal(d) {
		t.Error("hash keys $remote_addr and $cookie_x compare equal")
	}
	if ch := Diff(State{"web": a}, State{"web": b}); len(ch.Set) != 1 {
		t.Errorf("Diff of a method change = %+v, want web set", ch)
	}
	var r FileRenderer
	r.Render(State{"web": a})
	if got, want := string(r.Render(State{"web": c})), string(RenderFile(State{"web": c})); got != want {
		t.Errorf("FileRenderer kept the old block after a method change:\n%s\nwant\n%s", got, want)
	}
}

func TestParseBodyBalanceErrors(t *testing.T) {
	for _, body := range []string{
		"server 10.0.0.1:80; least_conn;",                         // after a server
		"least_conn; ip_hash; server 10.0.0.1:80;",                // two methods
		"least_conn x; server 10.0.0.1:80;",                       // argument
		"hash; server 10.0.0.1:80;",                               // no key
		"hash $x y; server 10.0.0.1:80;",                          // bad flag
		"hash \"$x\"; server 10.0.0.1:80;",                        // quotes are not our dialect
		"ip_hash; server 10.0.0.1:80; server 10.0.0.2:80 backup;", // nginx refuses
		"random; server 10.0.0.1:80;",                             // not ours
	} {
		if u, err := ParseBody("web", body); err == nil {
			t.Errorf("ParseBody(%q) accepted: %+v", body, u.Balance)
		}
	}
}

// TestHashKeyTakesOnlyKnownVariables: a variable nginx does not know makes
// the rendered file fail nginx -t ("unknown variable"), so a key names
// only variables every nginx has (HashKeyVariables, or a name under
// HashKeyPrefixes); nginx/balance_test.go has stock nginx check them all.
func TestHashKeyTakesOnlyKnownVariables(t *testing.T) {
	for _, key := range []string{"$no_such_var", "$remote_addr$nosuchvar", "$x", "$http_", "$cookie_", "$arg_", "$upstream_addr", "v1/$foo"} {
		err := ValidHashKey(key)
		if err == nil || !strings.Contains(err.Error(), "not a variable") {
			t.Errorf("ValidHashKey(%q) = %v, want it refused as not a variable nginx knows", key, err)
		}
	}
	for _, key := range []string{"$remote_addr", "$Remote_Addr", "$http_x_user", "$cookie_SID", "$arg_k", "$host$request_uri", "$binary_remote_addr:$server_port"} {
		if err := ValidHashKey(key); err != nil {
			t.Errorf("ValidHashKey(%q) = %v", key, err)
		}
	}
	for _, v := range HashKeyVariables {
		if err := ValidHashKey("$" + v); err != nil {
			t.Errorf("$%s: %v", v, err)
		}
	}
	// The syntax is checked first: a bad character is reported as such.
	if err := ValidHashKey("$x;server"); err == nil || !strings.Contains(err.Error(), "character ';'") {
		t.Errorf("$x;server: %v, want the character refused", err)
	}
}

// TestCheckBalanceSeesWhatNginxRefuses: the plan's last line of defence
// (engine.checked) calls CheckBalance on every upstream.
func TestCheckBalanceSeesWhatNginxRefuses(t *testing.T) {
	u := ups("web", 0, srv("10.0.0.1:80", 1))
	if err := u.CheckBalance(); err != nil {
		t.Fatalf("round robin: %v", err)
	}
	u.Balance = Balance{Method: Hash, Key: "$nosuchvar"}
	if err := u.CheckBalance(); err == nil || !strings.Contains(err.Error(), "nosuchvar") {
		t.Errorf("unknown variable: %v", err)
	}
	u.Balance = Balance{Method: IPHash}
	b := srv("10.0.0.2:80", 1)
	b.Backup = true
	u.Servers = append(u.Servers, b)
	if err := u.CheckBalance(); err == nil || !strings.Contains(err.Error(), "backup") {
		t.Errorf("backup under ip_hash: %v", err)
	}
}
