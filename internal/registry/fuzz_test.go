package registry

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// renderedLine is every line a rendered file may hold besides its header:
// nothing from the registry passes except a validated name, address or
// number.
var renderedLine = regexp.MustCompile(`^(|upstream [A-Za-z0-9][A-Za-z0-9_.-]* \{|    server (\d{1,3}(\.\d{1,3}){3}|\[[0-9a-f:.]+\]):\d{1,5} weight=\d+ max_fails=\d+ fail_timeout=\d+s( max_conns=\d+)?( backup)?( down)?;|    keepalive \d+;|\})$`)

// FuzzBuildRender feeds arbitrary registry values through validation and
// rendering. Whatever Build accepts must render to lines of the expected
// shapes only, parse back (file and dyups body) to exactly the servers
// Build produced, nothing more; whatever it refuses must be reported as
// dropped, never rendered.
func FuzzBuildRender(f *testing.F) {
	f.Add("web", "i-1", "10.0.0.1", 8080, "gray=canary", "3", "5")
	f.Add("web", "i-2", "::1", 443, "", "1", "")
	f.Add("we b", "i;3", "10.0.0.1;", 80, "gray=x}", "1\n", "x")
	f.Add("web", "id", "example.com", 0, "gray=default", "0", "70000")
	f.Add("web{", "}", "10.0.0.1\n#", 70000, "\x00", "-1", "1e3")
	f.Add("Ωmega", "\"", "fe80::1%eth0", 65535, "gray=ü", "10001", "2")
	f.Fuzz(func(t *testing.T, service, id, addr string, port int, tag, weight, keepalive string) {
		r := Rules{Exclude: []string{"consul"}, CanaryTag: "gray", WeightMeta: "weight", Weight: 1, MaxFails: 2, FailTimeout: 10 * time.Second, Keepalive: 16}
		if k, err := strconv.Atoi(keepalive); err == nil {
			r.KeepaliveFor = map[string]int{service: k}
		}
		in := Instance{Service: service, ID: id, Address: addr, Port: port, Healthy: true, Tags: strings.Split(tag, "\x00"), Meta: map[string]string{"weight": weight}}
		st, dropped := Build(map[string][]Instance{service: {in}}, r)

		servers := 0
		for _, u := range st {
			servers += len(u.Servers)
		}
		if r.WantService(service) && servers+len(dropped) != 1 {
			t.Fatalf("one instance gave %d servers and %d drops", servers, len(dropped))
		}
		for _, d := range dropped {
			if d.Reason == "" {
				t.Fatalf("dropped without a reason: %+v", d)
			}
		}

		// An upstream with no servers is known to the engine, which never
		// renders it (it keeps the last servers or does not create it).
		for name, u := range st {
			if len(u.Servers) == 0 {
				delete(st, name)
			}
		}
		file := upstream.RenderFile(st)
		body, ok := strings.CutPrefix(string(file), upstream.FileHeader)
		if !ok {
			t.Fatalf("no header:\n%s", file)
		}
		for _, line := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
			if !renderedLine.MatchString(line) {
				t.Fatalf("unexpected line %q in\n%s", line, file)
			}
		}
		back, err := upstream.ParseFile(file)
		if err != nil {
			t.Fatalf("rendered file does not parse: %v\n%s", err, file)
		}
		if !back.Equal(st) {
			t.Fatalf("file parses back to\n%s\nwant\n%s", upstream.RenderFile(back), file)
		}
		for name, u := range st {
			if err := upstream.ValidName(name); err != nil {
				t.Fatalf("invalid name rendered: %v", err)
			}
			b, err := upstream.ParseBody(name, u.Body())
			if err != nil {
				t.Fatalf("dyups body of %s does not parse: %v\n%s", name, err, u.Body())
			}
			if !b.Equal(u) {
				t.Fatalf("dyups body of %s parses back to %+v, want %+v", name, b, u)
			}
		}
	})
}
