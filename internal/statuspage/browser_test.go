//go:build unix

package statuspage

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	chromiumPath = "/usr/bin/chromium"
	shotW, shotH = 1200, 900
)

// The banner colours of page.html, as the screenshot must show them.
var bannerColours = map[string]rgb{
	stateOK:   {0x1e, 0x8e, 0x3e},
	stateHold: {0xf2, 0xa9, 0x00},
	stateBad:  {0xc5, 0x22, 0x1f},
}

// TestBrowserRendersStatusPage loads four pages in a real headless
// Chromium, one browser each, in parallel. The screenshot must be full
// size, not blank, and carry a banner of the state's colour across the top
// and none of the other states' colours; the DOM Chromium built must have
// the state, every hold and server row, and no element or attribute that the
// registry strings (hostile on one page) could have injected.
func TestBrowserRendersStatusPage(t *testing.T) {
	chromium := findChromium(t)
	if chromium == "" {
		return
	}
	tests := []struct {
		name  string
		page  Page
		state string
		want  []string // in the DOM
	}{
		{"ok", healthy(), stateOK, []string{"<h1>in sync</h1>", "No guard is holding changes back."}},
		{"hold", holding(), stateHold, []string{
			"<h1>holding changes</h1>", holding().Holds[0].Reason,
			`<section class="upstream" id="u-web">`, `<section class="upstream" id="u-api">`,
			"web-1 on node-a", "10.0.1.3:9000", `<span class="tag">zone=a</span>`,
		}},
		{"bad", broken(), stateBad, []string{"<h1>target out of sync</h1>", "connect: connection refused"}},
		// Were the </style> in a tag to end the style sheet, the banner of
		// this page would have no colour.
		{"hostile", hostile(), stateBad, []string{
			"&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;/style&gt;&lt;script&gt;alert(3)&lt;/script&gt;",
		}},
	}
	mux := http.NewServeMux()
	for _, tt := range tests {
		mux.Handle("/"+tt.name, Handler(func() Page { return tt.page }))
	}
	srv := httptest.NewServer(mux) // listens on 127.0.0.1
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	eventAttr := regexp.MustCompile(`<[^<>]*\son[a-z]+=`)

	for _, tt := range tests {
		t.Run(tt.name+" page shows a "+tt.state+" banner", func(t *testing.T) {
			t.Parallel()
			file := filepath.Join(dir, "statuspage-"+tt.name+".png")
			start := time.Now()
			dom := runChromium(t, chromium, "--screenshot="+file, "--dump-dom", srv.URL+"/"+tt.name)
			t.Logf("chromium took %s", time.Since(start).Round(time.Millisecond))
			keepScreenshot(t, file)
			img := decodePNG(t, file)

			if b := img.Bounds(); b.Dx() != shotW || b.Dy() != shotH {
				t.Fatalf("screenshot is %dx%d, want %dx%d", b.Dx(), b.Dy(), shotW, shotH)
			}
			if n := distinctColours(img); n < 64 {
				t.Errorf("screenshot has %d distinct colours, want a rendered page (>= 64)", n)
			}
			for state, c := range bannerColours {
				top, rows := bannerBand(img, c)
				switch {
				case state == tt.state && rows < 40:
					t.Errorf("%s banner colour %v fills %d rows, want a banner of >= 40", state, c, rows)
				case state == tt.state && top > 2:
					t.Errorf("%s banner starts at row %d, want the top of the page", state, top)
				case state != tt.state && rows > 0:
					t.Errorf("%s banner colour %v fills %d rows on the %s page", state, c, rows, tt.name)
				}
			}

			want := append([]string{`<header class="banner ` + tt.state + `" id="state">`}, tt.want...)
			for _, w := range want {
				if !strings.Contains(dom, w) {
					t.Errorf("DOM lacks %q", w)
				}
			}
			servers := 0
			for _, u := range tt.page.Upstreams {
				servers += len(u.Servers)
			}
			if got := strings.Count(dom, `<tr class="server">`); got != servers {
				t.Errorf("DOM has %d server rows, want %d", got, servers)
			}
			if got := strings.Count(dom, `<tr class="hold">`); got != len(tt.page.Holds) {
				t.Errorf("DOM has %d hold rows, want %d", got, len(tt.page.Holds))
			}
			for _, bad := range []string{"<script", "<img", "<iframe"} {
				if strings.Contains(dom, bad) {
					t.Errorf("DOM contains %q", bad)
				}
			}
			if m := eventAttr.FindString(dom); m != "" {
				t.Errorf("DOM has an event handler attribute: %s", m)
			}
			if n := strings.Count(dom, "<style>"); n != 1 {
				t.Errorf("DOM has %d style elements, want 1", n)
			}
			if t.Failed() {
				t.Logf("DOM:\n%s", dom)
			}
		})
	}
}

// findChromium returns Chromium's path, or "" when it is missing and
// SK_NO_BROWSER=1 allows that outside CI. It never skips.
func findChromium(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err == nil {
		return chromiumPath
	}
	const msg = chromiumPath + " not found: apt-get install -y --no-install-recommends chromium"
	if os.Getenv("CI") == "true" || os.Getenv("SK_NO_BROWSER") != "1" {
		t.Fatal(msg + " (or set SK_NO_BROWSER=1 outside CI to do without the browser test)")
	}
	t.Log(msg + "; SK_NO_BROWSER=1, so the browser test does nothing")
	return ""
}

// runChromium runs one headless Chromium with a throwaway profile, bounded
// by 60 s, and returns its standard output. On timeout it kills Chromium's
// whole process group, and it kills any helper left behind either way.
func runChromium(t *testing.T, chromium string, args ...string) string {
	t.Helper()
	home := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, append([]string{
		"--headless=new", "--no-sandbox", "--disable-gpu",
		"--window-size=1200,900", "--force-device-scale-factor=1", "--hide-scrollbars",
		"--force-color-profile=srgb", "--disable-dev-shm-usage",
		"--user-data-dir=" + filepath.Join(home, "profile"),
		"--no-first-run", "--no-default-browser-check", "--disable-extensions",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--no-proxy-server",
	}, args...)...)
	cmd.Env = append(os.Environ(),
		"HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_CACHE_HOME="+filepath.Join(home, ".cache"),
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if cmd.Process != nil {
		// Renderer and zygote helpers share the group; none may outlive us.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("chromium %s: no answer within 60s, killed; stderr:\n%s", strings.Join(args, " "), tail(stderr.String()))
	}
	if err != nil {
		t.Fatalf("chromium %s: %v; stderr:\n%s", strings.Join(args, " "), err, tail(stderr.String()))
	}
	return stdout.String()
}

func tail(s string) string {
	if len(s) > 4000 {
		return "..." + s[len(s)-4000:]
	}
	return s
}

// keepScreenshot copies file into $SK_SCREENSHOT_DIR when that is set.
func keepScreenshot(t *testing.T, file string) {
	t.Helper()
	dir := os.Getenv("SK_SCREENSHOT_DIR")
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(dir, filepath.Base(file))
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot saved to %s", dst)
}

func decodePNG(t *testing.T, file string) image.Image {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatalf("chromium wrote no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s: %v", file, err)
	}
	return img
}

type rgb struct{ R, G, B uint8 }

func pixel(img image.Image, x, y int) rgb {
	r, g, b, _ := img.At(x, y).RGBA()
	return rgb{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8)}
}

func (c rgb) near(d rgb) bool {
	diff := func(a, b uint8) int { return max(int(a), int(b)) - min(int(a), int(b)) }
	return diff(c.R, d.R) <= 6 && diff(c.G, d.G) <= 6 && diff(c.B, d.B) <= 6
}

func distinctColours(img image.Image) int {
	seen := map[rgb]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			seen[pixel(img, x, y)] = true
		}
	}
	return len(seen)
}

// bannerBand finds the rows where colour c covers at least half the width:
// it returns the first such row and how many rows follow on from it
// without a break (-1, 0 when there is none).
func bannerBand(img image.Image, c rgb) (top, rows int) {
	b := img.Bounds()
	top = -1
	for y := b.Min.Y; y < b.Max.Y; y++ {
		n := 0
		for x := b.Min.X; x < b.Max.X; x++ {
			if pixel(img, x, y).near(c) {
				n++
			}
		}
		if n*2 >= b.Dx() {
			if top < 0 {
				top = y - b.Min.Y
			}
			rows++
		} else if top >= 0 {
			break
		}
	}
	return top, rows
}
