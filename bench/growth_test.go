package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGrowthReportsEachSizeInOrder: the growth report takes one results
// file per size, in any order, and lists the sizes from the smallest with
// the worst figures of each size's runs, and draws the plot.
func TestGrowthReportsEachSizeInOrder(t *testing.T) {
	dir := t.TempDir()
	var paths []string
	for _, size := range []struct {
		services int
		cpu      []float64
	}{{10000, []float64{4.5}}, {100, []float64{1.1, 1.3}}, {1000, []float64{2.2}}} {
		r := &Results{Params: Params{Services: size.services, Instances: 10, ConsulWatch: "per_service", Store: "directory"}, Scale: &ScaleResult{}}
		if size.services == 100 {
			r.Versions.SwallowKeeper = "swallowkeeper dev (go1.26.8 linux/amd64), commit abc1234"
		}
		for i, cpu := range size.cpu {
			r.Scale.Runs = append(r.Scale.Runs, ScaleRun{Run: i + 1, Services: size.services, Synced: true, CPUPerChangeMs: cpu, RSSMB: float64(size.services) / 50,
				ColdSyncMs: 1500, ChangeLatency: Summary{P50: 9 + float64(i), P99: 20}, FileReplaceCPUMs: 0.7})
		}
		p := filepath.Join(dir, "scale-"+strings.TrimSpace(strings.Repeat("x", size.services/100))+".json")
		if err := WriteJSON(p, r); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	md := filepath.Join(dir, "SCALE.md")
	if err := Growth(paths, md); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i100, i1000, i10000 := strings.Index(text, "| 100 × 10 |"), strings.Index(text, "| 1000 × 10 |"), strings.Index(text, "| 10000 × 10 |")
	if !strings.Contains(text, "per_service | directory") {
		t.Errorf("the configuration is not named:\n%s", text)
	}
	if i100 < 0 || i1000 < i100 || i10000 < i1000 {
		t.Fatalf("sizes missing or out of order:\n%s", text)
	}
	if !strings.Contains(text[i100:i1000], "| 1.30 ms | 10.0 / 20.0 ms |") || !strings.Contains(text[i100:i1000], "| 0.70 ms |") {
		t.Errorf("100 services: want the worst run's CPU (1.30 ms) and the highest p50 (10.0):\n%s", text[i100:i1000])
	}
	if !strings.Contains(text[i100:i1000], "| 0.70 ms | 2 | abc1234 |") || !strings.Contains(text[i1000:i10000], "| 1 | — |") {
		t.Errorf("want each row's number of runs and the commit measured (— when its version names none):\n%s", text)
	}
	if fi, err := os.Stat(filepath.Join(dir, PlotGrowth)); err != nil || fi.Size() == 0 {
		t.Fatalf("plot: %v", err)
	}
	if err := Growth([]string{filepath.Join(dir, "absent.json")}, md); err == nil {
		t.Fatal("a missing results file was accepted")
	}
}
