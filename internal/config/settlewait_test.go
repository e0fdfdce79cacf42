package config

import (
	"testing"
	"time"
)

// TestSettleWaitInReloadMode: reload mode has one window, the engine's; it
// is never shorter than reload.min_wait / reload.max_wait, so a reload-mode
// configuration written for the sink's own window keeps its pace, and
// wait.* still applies where it is the larger. Outside reload mode wait.*
// is taken as it is.
func TestSettleWaitInReloadMode(t *testing.T) {
	s := func(d string) Duration { v, _ := time.ParseDuration(d); return Duration(v) }
	for _, tc := range []struct {
		name                 string
		reload               bool
		min, max, rmin, rmax string
		wantMin, wantMax     string
	}{
		{"dyups mode: wait as set", false, "0s", "0s", "1s", "5s", "0s", "0s"},
		{"dyups mode: wait as set", false, "200ms", "2s", "1s", "5s", "200ms", "2s"},
		{"reload mode, no wait: the reload window", true, "0s", "0s", "1s", "5s", "1s", "5s"},
		{"reload mode, shorter wait: the reload window", true, "200ms", "2s", "1s", "5s", "1s", "5s"},
		{"reload mode, longer wait: wait", true, "3s", "20s", "1s", "5s", "3s", "20s"},
		{"reload mode, each bound the larger", true, "3s", "0s", "100ms", "1s", "3s", "3s"},
	} {
		c := Default()
		c.Reload.Enabled = tc.reload
		c.Wait = Wait{s(tc.min), s(tc.max)}
		c.Reload.MinWait, c.Reload.MaxWait = s(tc.rmin), s(tc.rmax)
		if got := c.SettleWait(); got != (Wait{s(tc.wantMin), s(tc.wantMax)}) {
			t.Errorf("%s: wait %s/%s, reload %s/%s: got %v/%v, want %s/%s", tc.name, tc.min, tc.max, tc.rmin, tc.rmax, got.Min, got.Max, tc.wantMin, tc.wantMax)
		}
	}
}
