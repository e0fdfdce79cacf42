package packaging

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/cli"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int // where it starts, 1-based
	cmd  string
	args string
}

// parseDockerfile returns the instructions of a Dockerfile: comments and
// blank lines left out, lines ending in a backslash joined to the next.
func parseDockerfile(text string) []instruction {
	var out []instruction
	var cur *instruction
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		cont := strings.HasSuffix(trimmed, "\\")
		trimmed = strings.TrimSpace(strings.TrimSuffix(trimmed, "\\"))
		if cur == nil {
			cmd, args, _ := strings.Cut(trimmed, " ")
			out = append(out, instruction{line: i + 1, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
			cur = &out[len(out)-1]
		} else {
			cur.args += " " + trimmed
		}
		if !cont {
			cur = nil
		}
	}
	return out
}

// pinnedImage is image:tag@sha256:<64 hex>: the tag for the reader, the
// digest for the pull.
var pinnedImage = regexp.MustCompile(`^[a-z0-9][a-z0-9._/-]*:[A-Za-z0-9_][A-Za-z0-9._-]*@sha256:[0-9a-f]{64}$`)

// checkDockerfile returns what is wrong with a Dockerfile's pinning and
// health check, and the health check's command.
func checkDockerfile(text string) (healthcheck []string, problems []string) {
	ins := parseDockerfile(text)
	var stages []string
	lastFrom, entrypoint, cmd := -1, []string(nil), []string(nil)
	var health []instruction
	for i, in := range ins {
		switch in.cmd {
		case "FROM":
			lastFrom = i
			words := strings.Fields(in.args)
			for len(words) > 0 && strings.HasPrefix(words[0], "--") {
				words = words[1:]
			}
			if len(words) == 0 {
				problems = append(problems, fmt.Sprintf("line %d: FROM without an image", in.line))
				continue
			}
			image := words[0]
			if len(words) == 3 && strings.EqualFold(words[1], "AS") {
				stages = append(stages, words[2])
			}
			if slices.Contains(stages[:max(0, len(stages)-1)], image) {
				continue // an earlier stage, not an image
			}
			if !pinnedImage.MatchString(image) {
				problems = append(problems, fmt.Sprintf("line %d: FROM %s is not pinned as image:tag@sha256:<digest>", in.line, image))
			}
		case "HEALTHCHECK":
			health = append(health, in)
		case "ENTRYPOINT":
			entrypoint = jsonArgv(in.args)
		case "CMD":
			cmd = jsonArgv(in.args)
		}
	}
	if lastFrom < 0 {
		return nil, append(problems, "no FROM")
	}
	if len(health) != 1 {
		return nil, append(problems, fmt.Sprintf("%d HEALTHCHECK instructions, want 1", len(health)))
	}
	h := health[0]
	if !slices.ContainsFunc(ins[lastFrom:], func(in instruction) bool { return in.line == h.line }) {
		problems = append(problems, fmt.Sprintf("line %d: HEALTHCHECK is not in the final stage", h.line))
	}
	_, exec, ok := strings.Cut(h.args, "CMD ")
	healthcheck = jsonArgv(exec)
	if !ok || healthcheck == nil {
		return nil, append(problems, fmt.Sprintf("line %d: HEALTHCHECK without CMD [\"exec\", \"form\"]: %s", h.line, h.args))
	}
	if len(entrypoint) == 0 || healthcheck[0] != entrypoint[0] {
		problems = append(problems, fmt.Sprintf("HEALTHCHECK runs %q, not the image's own binary (ENTRYPOINT %v)", healthcheck[0], entrypoint))
	}
	// The probe must read the configuration the daemon runs with, so that
	// it asks the metrics.listen the daemon serves.
	if i, j := slices.Index(healthcheck, "-config"), slices.Index(cmd, "-config"); i < 0 || j < 0 || i+1 >= len(healthcheck) || j+1 >= len(cmd) || healthcheck[i+1] != cmd[j+1] {
		problems = append(problems, fmt.Sprintf("HEALTHCHECK %v and CMD %v do not name the same -config", healthcheck, cmd))
	}
	return healthcheck, problems
}

func jsonArgv(s string) []string {
	var argv []string
	if json.Unmarshal([]byte(strings.TrimSpace(s)), &argv) != nil || len(argv) == 0 {
		return nil
	}
	return argv
}

// TestDockerfilePinnedAndHealthChecked checks that every FROM of the
// Dockerfile is pinned by digest and that its HEALTHCHECK probes the
// daemon: run against a real daemon's listener, the probe passes, and it
// fails once the daemon is gone.
func TestDockerfilePinnedAndHealthChecked(t *testing.T) {
	text, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	probe, problems := checkDockerfile(string(text))
	for _, p := range problems {
		t.Error("Dockerfile: " + p)
	}
	if probe == nil {
		t.FailNow()
	}

	// The daemon as the image runs it, with a configuration of the test's:
	// the registry and nginx are unreachable, the probe needs only the
	// listener.
	dir := t.TempDir()
	listen := testenv.Addr(testenv.FreePort(t))
	conf := filepath.Join(dir, "swallowkeeper.yml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`consul:
  address: 127.0.0.1:1
file: %s
targets:
  - url: http://127.0.0.1:1
metrics:
  listen: %s
`, filepath.Join(dir, "upstreams.conf"), listen)), 0o644); err != nil {
		t.Fatal(err)
	}
	args := slices.Clone(probe[1:])
	args[slices.Index(args, "-config")+1] = conf
	health := func() (int, string) {
		var out bytes.Buffer
		code := cli.Run(context.Background(), args, &out, &out, func(string) string { return "" })
		return code, out.String()
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := &testenv.LogBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- cli.Run(ctx, []string{"run", "-config", conf}, io.Discard, log, func(string) string { return "" })
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(log.String(), "metrics listening") {
		select {
		case code := <-done:
			t.Fatalf("daemon exited %d before listening; log:\n%s", code, log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not listening after 30s; log:\n%s", log.String())
		}
	}
	if code, out := health(); code != 0 {
		t.Errorf("HEALTHCHECK %v against a running daemon: exit %d\n%s", probe, code, out)
	}

	cancel()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatalf("daemon did not stop; log:\n%s", log.String())
	}
	if code, out := health(); code == 0 {
		t.Errorf("HEALTHCHECK %v passes with no daemon running:\n%s", probe, out)
	} else {
		t.Logf("with the daemon stopped the probe exits %d: %s", code, strings.TrimSpace(out))
	}
}

// TestCheckDockerfileRefuses keeps checkDockerfile honest on the mistakes
// it is there to catch.
func TestCheckDockerfileRefuses(t *testing.T) {
	const digest = "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	good := "FROM golang:1.26-bookworm" + digest + " AS build\nRUN true\nFROM build AS again\nFROM debian:bookworm-slim" + digest + "\n" +
		"HEALTHCHECK --interval=30s \\\n    CMD [\"sk\", \"status\", \"-config\", \"/c.yml\"]\nENTRYPOINT [\"sk\"]\nCMD [\"run\", \"-config\", \"/c.yml\"]\n"
	if _, problems := checkDockerfile(good); len(problems) != 0 {
		t.Fatalf("a correct Dockerfile is refused: %v", problems)
	}
	for name, bad := range map[string]string{
		"tag only":            strings.Replace(good, "bookworm-slim"+digest, "bookworm-slim", 1),
		"digest only":         strings.Replace(good, "debian:bookworm-slim"+digest, "debian"+digest, 1),
		"short digest":        strings.Replace(good, "bookworm-slim"+digest, "bookworm-slim@sha256:0123", 1),
		"no healthcheck":      strings.Replace(good, "HEALTHCHECK", "# HEALTHCHECK", 1),
		"healthcheck early":   strings.Replace(strings.Replace(good, "HEALTHCHECK --interval=30s \\\n    CMD [\"sk\", \"status\", \"-config\", \"/c.yml\"]\n", "", 1), "RUN true\n", "RUN true\nHEALTHCHECK CMD [\"sk\", \"status\", \"-config\", \"/c.yml\"]\n", 1),
		"shell form":          strings.Replace(good, `CMD ["sk", "status", "-config", "/c.yml"]`, "CMD sk status", 1),
		"other binary":        strings.Replace(good, `CMD ["sk", "status"`, `CMD ["curl", "status"`, 1),
		"other configuration": strings.Replace(good, `"status", "-config", "/c.yml"`, `"status", "-config", "/other.yml"`, 1),
	} {
		if _, problems := checkDockerfile(bad); len(problems) == 0 {
			t.Errorf("%s: not refused", name)
		}
	}
}
