package bench

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// The growth report: how a change's cost grows with the catalog, from
// scale results at several sizes (each file one -scenarios scale run at
// one -services), as issue 18 asks: CPU per change, change p50 and RSS
// against the number of services.

// PlotGrowth is the growth plot's file name, next to the report.
const PlotGrowth = "scale_growth.png"

// growthPoint is one size: the worst of its runs, as the targets read
// them, and how the daemon ran.
type growthPoint struct {
	services, instances int
	watch, store        string
	worst               ScaleRun
	p50, p99            float64 // the highest p50 and p99 over the runs
	replace             float64 // the highest FileReplaceCPUMs over the runs
	file                string
	runs                int
	commit              string // of the daemon measured, from its version line
}

// config names how the daemon ran: its consul.watch and store.
func (g growthPoint) config() string {
	return orDefault(g.watch, "catalog") + ", " + orDefault(g.store, "file")
}

// Growth reads the results files at paths and writes the growth report
// to mdPath and its plot next to it.
func Growth(paths []string, mdPath string) error {
	var points []growthPoint
	for _, p := range paths {
		r, err := ReadJSON(p)
		if err != nil {
			return err
		}
		if r.Scale == nil || len(r.Scale.Runs) == 0 {
			return fmt.Errorf("growth: %s holds no scale run (make it with -scenarios scale)", p)
		}
		g := growthPoint{services: r.Params.Services, instances: r.Params.Instances, watch: r.Params.ConsulWatch, store: r.Params.Store, worst: r.Scale.Worst(), file: p,
			runs: len(r.Scale.Runs), commit: commitOf(r.Versions.SwallowKeeper)}
		for _, run := range r.Scale.Runs {
			g.p50, g.p99 = max(g.p50, run.ChangeLatency.P50), max(g.p99, run.ChangeLatency.P99)
			g.replace = max(g.replace, run.FileReplaceCPUMs)
		}
		points = append(points, g)
	}
	slices.SortFunc(points, func(a, b growthPoint) int {
		if c := strings.Compare(a.config(), b.config()); c != 0 {
			return c
		}
		return a.services - b.services
	})
	// The plot draws the configuration measured at the most sizes; the
	// table lists every file.
	count := map[string]int{}
	curve := ""
	for _, g := range points {
		count[g.config()]++
		if count[g.config()] > count[curve] {
			curve = g.config()
		}
	}
	var drawn []growthPoint
	for _, g := range points {
		if g.config() == curve {
			drawn = append(drawn, g)
		}
	}
	dir := filepath.Dir(mdPath)
	if err := plotGrowth(drawn, curve, filepath.Join(dir, PlotGrowth)); err != nil {
		return err
	}
	return os.WriteFile(mdPath, []byte(growthMarkdown(points)), 0o644)
}

func growthMarkdown(points []growthPoint) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("# Scale: growth with the catalog\n\n")
	w("Made by `swallowkeeper-bench -growth` from the scale results of each size (`scripts/bench.sh -scenarios scale -services N`), one file per size; each figure is the worst of that size's runs. Targets (issue 18): at 1,000 × 10, CPU per change ≤ 2 ms, change p50 / p99 ≤ 10 / 30 ms, RSS ≤ 60 MB; at 10,000 × 10, ≤ 5 ms, ≤ 20 / 50 ms, ≤ 200 MB; cold sync ≤ 2 s and ≤ 20 s; Consul connections ≤ 20; idle CPU ≤ 10 ms/s.\n\n")
	w("![CPU per change, change p50 and RSS against the number of services](%s)\n\n", PlotGrowth)
	w("The plot draws the configuration measured at the most sizes; the table lists every results file, by configuration.\n\n")
	w("| services × instances | consul.watch | store | cold sync | CPU per change | change p50 / p99 | RSS (peak) | Consul connections | idle CPU | one file replace on this disk | runs | commit | results |\n")
	w("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, g := range points {
		store := g.store
		if store == "" {
			store = "file"
		}
		replace := "—"
		if g.replace > 0 {
			replace = fmt.Sprintf("%.2f ms", g.replace)
		}
		w("| %d × %d | %s | %s | %.2f s | %.2f ms | %.1f / %.1f ms | %.1f MB (%.1f) | %d | %.1f ms/s | %s | %d | %s | `%s` |\n",
			g.services, g.instances, orDefault(g.watch, "catalog"), store, g.worst.ColdSyncMs/1000, g.worst.CPUPerChangeMs, g.p50, g.p99,
			g.worst.RSSMB, g.worst.PeakRSSMB, g.worst.MaxConsulConns, g.worst.IdleCPUMsPerS, replace, g.runs, orDefault(g.commit, "—"), filepath.Base(g.file))
	}
	w("\nCPU per change is the daemon's `utime+stime` over the changes less the idle rate, per change; it includes the kernel's work for the file writes (the column \"one file replace\": the bench's own CPU for one atomic replace of a small file in the daemon's directory, measured apart, the way the store replaces: for the directory store since cb0135a and the one-file store since 4019628, the file's spare rewritten and exchanged in; before, a temp file renamed in).\n")
	return b.String()
}

// commitOf is the commit in a version line such as "swallowkeeper dev
// (go1.26.8 linux/amd64), commit f851846" ("" when it names none): rows
// measured by different code must say so.
func commitOf(version string) string {
	_, after, ok := strings.Cut(version, "commit ")
	if f := strings.Fields(after); ok && len(f) > 0 {
		return f[0]
	}
	return ""
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// plotGrowth draws the three growth curves on log–log axes: a cost that
// grows with the catalog rises to the right, one that does not stays
// flat.
func plotGrowth(points []growthPoint, config, path string) error {
	if len(points) == 0 {
		return fmt.Errorf("growth: no results")
	}
	p := plot.New()
	p.Title.Text = "Scale: a single-instance change against the catalog's size (" + config + ")"
	p.X.Label.Text = "services (× instances each)"
	p.Y.Label.Text = "value"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = plot.LogTicks{}, plot.LogTicks{}
	p.Add(plotter.NewGrid())
	p.Legend.Top, p.Legend.Left = true, true
	series := []struct {
		name  string
		color color.RGBA
		value func(growthPoint) float64
	}{
		{"CPU per change (ms)", color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, func(g growthPoint) float64 { return g.worst.CPUPerChangeMs }},
		{"change p50 (ms)", color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}, func(g growthPoint) float64 { return g.p50 }},
		{"RSS (MB)", color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, func(g growthPoint) float64 { return g.worst.RSSMB }},
	}
	for _, s := range series {
		xy := make(plotter.XYs, 0, len(points))
		for _, g := range points {
			xy = append(xy, plotter.XY{X: float64(g.services), Y: max(s.value(g), logFloor)})
		}
		line, dots, err := plotter.NewLinePoints(xy)
		if err != nil {
			return err
		}
		line.Color, dots.Color = s.color, s.color
		p.Add(line, dots)
		p.Legend.Add(s.name, line, dots)
	}
	return p.Save(8*vg.Inch, 5*vg.Inch, path)
}
