package bench

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

var modeColor = map[string]color.RGBA{
	ModeLua:            {R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	ModeReload:         {R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	ModeConsulTemplate: {R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
}

// WritePlots writes the PNG plots of r into dir and returns their names.
func WritePlots(r *Results, dir string) ([]string, error) {
	var written []string
	if len(r.Propagation) > 0 {
		if err := plotPropagation(r, filepath.Join(dir, PlotPropagationCDF)); err != nil {
			return written, err
		}
		written = append(written, PlotPropagationCDF)
	}
	if len(r.Churn) > 0 {
		if err := plotChurnP99(r, filepath.Join(dir, PlotChurnP99)); err != nil {
			return written, err
		}
		written = append(written, PlotChurnP99)
		for _, mode := range modesOf(r.Churn) {
			if err := plotChurnMode(r, mode, filepath.Join(dir, PlotChurn(mode))); err != nil {
				return written, err
			}
			written = append(written, PlotChurn(mode))
		}
	}
	return written, nil
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = true
	return p
}

// logFloor keeps values plotted on a log axis positive.
const logFloor = 0.1

func plotPropagation(r *Results, path string) error {
	p := newPlot(fmt.Sprintf("Propagation: Consul write → nginx routes to the new set (%d changes per mode)", r.Params.Changes*r.Params.Runs),
		"propagation latency (ms, log scale)", "fraction of changes ≤ x")
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.XOffs = vg.Points(10)
	p.Legend.YOffs = -vg.Points(10)
	minX, maxX := math.Inf(1), 0.0
	for _, mode := range modesOf(r.Propagation) {
		xs, ys := CDF(r.Propagation[mode].Values())
		if len(xs) == 0 {
			continue
		}
		var pts plotter.XYs
		prev := 0.0
		for i, x := range xs {
			x = max(x, logFloor)
			pts = append(pts, plotter.XY{X: x, Y: prev}, plotter.XY{X: x, Y: ys[i]})
			prev = ys[i]
			minX, maxX = min(minX, x), max(maxX, x)
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		l.Color = modeColor[mode]
		l.Width = vg.Points(2)
		p.Add(l)
		s := r.Propagation[mode].All
		p.Legend.Add(fmt.Sprintf("%s (p50 %.1f ms, p99 %.1f ms)", mode, s.P50, s.P99), l)
	}
	if maxX > 0 {
		p.X.Min = math.Pow(10, math.Floor(math.Log10(minX)))
		p.X.Max = math.Pow(10, math.Ceil(math.Log10(maxX)))
	}
	return p.Save(10*vg.Inch, 5.5*vg.Inch, path)
}

func churnWindow(p *plot.Plot, start, end, yMin, yMax float64) error {
	for _, x := range []float64{start, end} {
		l, err := plotter.NewLine(plotter.XYs{{X: x, Y: yMin}, {X: x, Y: yMax}})
		if err != nil {
			return err
		}
		l.Color = color.Gray{Y: 0x60}
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(l)
		if x == start {
			p.Legend.Add("churn starts / ends", l)
		}
	}
	return nil
}

func seriesLine(buckets []Bucket, f func(Bucket) float64) plotter.XYs {
	var pts plotter.XYs
	for _, b := range buckets {
		if b.N == 0 {
			continue
		}
		pts = append(pts, plotter.XY{X: b.T + 0.5, Y: max(f(b), logFloor)})
	}
	return pts
}

func yRange(runs []LoadRun) (lo, hi float64) {
	lo, hi = math.Inf(1), 0
	for _, run := range runs {
		for _, b := range run.Series {
			if b.N == 0 {
				continue
			}
			lo = min(lo, max(b.P50, logFloor))
			hi = max(hi, b.Max, b.P99)
		}
	}
	if hi == 0 {
		return 0.1, 10
	}
	return math.Pow(10, math.Floor(math.Log10(lo))), math.Pow(10, math.Ceil(math.Log10(hi)))
}

func plotChurnP99(r *Results, path string) error {
	p := newPlot(fmt.Sprintf("Churn: p99 latency per second, %g changes/s at %d req/s (run 1)", r.Params.ChurnPerSecond, r.Params.Rate),
		"time since the load started (s)", "p99 latency per 1 s (ms, log scale)")
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top, p.Legend.Left = false, false
	p.Legend.XOffs, p.Legend.YOffs = -vg.Points(10), vg.Points(10)
	var all []LoadRun
	for _, mode := range modesOf(r.Churn) {
		all = append(all, r.Churn[mode].Runs[0])
	}
	lo, hi := yRange(all)
	p.Y.Min, p.Y.Max = lo, hi
	for _, mode := range modesOf(r.Churn) {
		run := r.Churn[mode].Runs[0]
		l, err := plotter.NewLine(seriesLine(run.Series, func(b Bucket) float64 { return b.P99 }))
		if err != nil {
			return err
		}
		l.Color = modeColor[mode]
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(mode, l)
	}
	if err := churnWindow(p, all[0].PhaseStartS, all[0].PhaseEndS, lo, hi); err != nil {
		return err
	}
	return p.Save(10*vg.Inch, 5*vg.Inch, path)
}

func plotChurnMode(r *Results, mode, path string) error {
	runs := r.Churn[mode].Runs
	p := newPlot(fmt.Sprintf("Churn, %s: latency per second, %g changes/s at %d req/s", mode, r.Params.ChurnPerSecond, r.Params.Rate),
		"time since the load started (s)", "latency (ms, log scale)")
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top, p.Legend.Left = false, false
	p.Legend.XOffs, p.Legend.YOffs = -vg.Points(10), vg.Points(10)
	lo, hi := yRange(runs)
	p.Y.Min, p.Y.Max = lo, hi
	stats := []struct {
		name  string
		f     func(Bucket) float64
		width float64
		dash  bool
	}{
		{"p50", func(b Bucket) float64 { return b.P50 }, 1, true},
		{"p99", func(b Bucket) float64 { return b.P99 }, 1.5, false},
		{"max", func(b Bucket) float64 { return b.Max }, 0.7, false},
	}
	c := modeColor[mode]
	for i, run := range runs {
		for j, s := range stats {
			l, err := plotter.NewLine(seriesLine(run.Series, s.f))
			if err != nil {
				return err
			}
			shade := c
			if j == 2 {
				shade = color.RGBA{R: 0xa0, G: 0xa0, B: 0xa0, A: 0xff}
			}
			l.Color = shade
			l.Width = vg.Points(s.width)
			if s.dash {
				l.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
			}
			p.Add(l)
			if i == 0 {
				name := s.name
				if len(runs) > 1 {
					name = fmt.Sprintf("%s (one line per run, %d runs)", s.name, len(runs))
				}
				p.Legend.Add(name, l)
			}
		}
		// Errors per second, as points at the top of the plot.
		var errPts plotter.XYs
		for _, b := range run.Series {
			if b.Errors > 0 {
				errPts = append(errPts, plotter.XY{X: b.T + 0.5, Y: hi * 0.8})
			}
		}
		if len(errPts) > 0 {
			sc, err := plotter.NewScatter(errPts)
			if err != nil {
				return err
			}
			sc.GlyphStyle.Color = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
			sc.GlyphStyle.Shape = draw.CrossGlyph{}
			sc.GlyphStyle.Radius = vg.Points(3)
			p.Add(sc)
			if i == 0 {
				p.Legend.Add("second with failed requests", sc)
			}
		}
	}
	if err := churnWindow(p, runs[0].PhaseStartS, runs[0].PhaseEndS, lo, hi); err != nil {
		return err
	}
	return p.Save(10*vg.Inch, 5*vg.Inch, path)
}
