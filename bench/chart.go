package bench

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// BarSeries is one colour of a grouped bar chart.
type BarSeries struct {
	Name   string
	Values []float64   // one per category; NaN draws no bar
	Color  color.Color // nil: the series' position in plotutil's palette
}

// BarChart is a grouped bar chart: for every category one bar per series,
// each labelled with its value.
type BarChart struct {
	Title      string
	YLabel     string
	Categories []string
	Series     []BarSeries
}

const (
	barWidth     = vg.Length(14) // points
	panelHeight  = 3.5 * vg.Inch
	minPanelW    = 3.3 * vg.Inch
	panelsPerRow = 3
)

// build makes the plot and says how wide it wants to be.
func (c BarChart) build() (*plot.Plot, vg.Length, error) {
	if len(c.Categories) == 0 || len(c.Series) == 0 {
		return nil, 0, fmt.Errorf("bench: chart %q has no data", c.Title)
	}
	p := plot.New()
	p.Title.Text = c.Title
	p.Y.Label.Text = c.YLabel
	p.Y.Min = 0
	p.Legend.Top = true
	grid := plotter.NewGrid()
	grid.Vertical.Color = nil
	p.Add(grid)
	p.Y.Tick.Marker = plainTicks{}
	n := len(c.Series)
	top := 0.0
	for i, s := range c.Series {
		if len(s.Values) != len(c.Categories) {
			return nil, 0, fmt.Errorf("bench: chart %q: series %q has %d values for %d categories", c.Title, s.Name, len(s.Values), len(c.Categories))
		}
		vals := make(plotter.Values, len(s.Values))
		labels := plotter.XYLabels{XYs: make(plotter.XYs, len(s.Values)), Labels: make([]string, len(s.Values))}
		for j, v := range s.Values {
			labels.XYs[j].X = float64(j)
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				vals[j] = v
				labels.XYs[j].Y = v
				labels.Labels[j] = " " + shortNum(v)
				top = max(top, v)
			}
		}
		bars, err := plotter.NewBarChart(vals, barWidth)
		if err != nil {
			return nil, 0, fmt.Errorf("bench: chart %q: %w", c.Title, err)
		}
		bars.LineStyle.Width = 0
		bars.Color = s.Color
		if bars.Color == nil {
			bars.Color = plotutil.Color(i)
		}
		bars.Offset = vg.Length(float64(i)-float64(n-1)/2) * barWidth
		p.Add(bars)
		p.Legend.Add(s.Name, bars)
		lbl, err := plotter.NewLabels(labels)
		if err != nil {
			return nil, 0, fmt.Errorf("bench: chart %q: %w", c.Title, err)
		}
		for k := range lbl.TextStyle {
			lbl.TextStyle[k].Font.Size = vg.Points(7)
			lbl.TextStyle[k].Rotation = math.Pi / 2
			lbl.TextStyle[k].XAlign = draw.XLeft
			lbl.TextStyle[k].YAlign = draw.YCenter
		}
		lbl.Offset = vg.Point{X: bars.Offset}
		p.Add(lbl)
	}
	p.NominalX(c.Categories...)
	p.X.Min, p.X.Max = -0.5, float64(len(c.Categories))-0.5
	// Headroom for the value labels and the legend.
	if top > 0 {
		p.Y.Max = top * 1.5
	}
	// Room per category for its bars and its tick label.
	perCat := max(vg.Length(n+1)*barWidth*1.3, vg.Points(90))
	return p, max(vg.Length(len(c.Categories))*perCat+vg.Inch, minPanelW), nil
}

// WritePNG renders the chart alone as PNG.
func (c BarChart) WritePNG(w io.Writer) error {
	return Panels{Charts: []BarChart{c}}.WritePNG(w)
}

// Panels are bar charts drawn side by side in one image (three per row),
// each with its own y scale, so that a slow workload's bars stay readable
// next to a fast one's.
type Panels struct {
	Charts []BarChart
}

// WritePNG renders the panels as one PNG.
func (ps Panels) WritePNG(w io.Writer) error {
	if len(ps.Charts) == 0 {
		return fmt.Errorf("bench: no charts to draw")
	}
	cols := min(len(ps.Charts), panelsPerRow)
	rows := (len(ps.Charts) + cols - 1) / cols
	grid := make([][]*plot.Plot, rows)
	var cellW vg.Length
	for i, c := range ps.Charts {
		p, width, err := c.build()
		if err != nil {
			return err
		}
		if grid[i/cols] == nil {
			grid[i/cols] = make([]*plot.Plot, cols)
		}
		grid[i/cols][i%cols] = p
		cellW = max(cellW, width)
	}
	img := vgimg.New(cellW*vg.Length(cols), panelHeight*vg.Length(rows))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(grid, tiles, dc)
	for r := range grid {
		for c, p := range grid[r] {
			if p != nil {
				p.Draw(canvases[r][c])
			}
		}
	}
	_, err := vgimg.PngCanvas{Canvas: img}.WriteTo(w)
	return err
}

// TPSChart has one panel per workload: median TPS per client count for
// every target of the report.
func (r *Report) TPSChart() Panels {
	return r.panels(fmt.Sprintf("TPS, median of %d", r.Settings.Rounds),
		"transactions per second", r.Settings.Targets, func(c Cell) float64 { return c.TPS })
}

// CPUChart has one panel per workload: median proxy CPU µs per
// transaction for the targets that have a proxy process. It has no panels
// when no such target ran.
func (r *Report) CPUChart() Panels {
	var proxies []string
	for _, t := range r.Settings.Targets {
		if t != TargetDirect {
			proxies = append(proxies, t)
		}
	}
	if len(proxies) == 0 {
		return Panels{}
	}
	return r.panels("proxy CPU µs/txn", "µs of proxy CPU per transaction", proxies,
		func(c Cell) float64 { return c.CPUPerTxnUs })
}

// panels draws one panel per workload, one bar series per target it ran
// on. A workload and its baseline share one panel (a series per workload
// and target), so that encrypted and plaintext read on the same scale.
func (r *Report) panels(what, ylabel string, targets []string, metric func(Cell) float64) Panels {
	s := r.Summary()
	ws := r.Settings.Workloads
	var ps Panels
	for _, w := range ws {
		if slices.ContainsFunc(ws, func(x Workload) bool { return s.Baselines[x.Name] == w.Name }) {
			continue // drawn with the workload it is the baseline of
		}
		// Paired panels use the short names: two titles do not fit.
		group, title := []Workload{w}, w.Title
		if base, ok := r.workload(s.Baselines[w.Name]); ok {
			group, title = append(group, base), w.Name+" vs "+base.Name
		}
		on := 0
		for _, t := range targets {
			if w.RunsOn(t) {
				on++
			}
		}
		ch := BarChart{Title: title + ": " + what, YLabel: ylabel}
		for _, c := range r.Settings.Clients {
			ch.Categories = append(ch.Categories, fmt.Sprintf("%d clients", c))
		}
		for i, gw := range group {
			for _, t := range targets {
				if !gw.RunsOn(t) {
					continue
				}
				series := BarSeries{Name: t, Color: targetColor(t)}
				if len(group) > 1 {
					series.Name = gw.Name
					if on > 1 {
						series.Name += " on " + t
					}
					if i > 0 {
						series.Color = baselineColor
					}
				}
				for _, c := range r.Settings.Clients {
					v := math.NaN()
					if cell, ok := s.Cell(gw.Name, c, t); ok {
						v = metric(cell)
					}
					series.Values = append(series.Values, v)
				}
				ch.Series = append(ch.Series, series)
			}
		}
		if len(ch.Series) > 0 {
			ps.Charts = append(ps.Charts, ch)
		}
	}
	return ps
}

// shortNum formats a bar value compactly: 12345 → "12345", 18.25 → "18.2".
func shortNum(v float64) string {
	if math.Abs(v) >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

// plainTicks are the default ticks labelled without trailing zeros
// ("7500", not "7500.00").
type plainTicks struct{}

func (plainTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = strconv.FormatFloat(ticks[i].Value, 'f', -1, 64)
		}
	}
	return ticks
}

// baselineColor draws a baseline workload next to the one measured
// against it: the first palette colour no target uses.
var baselineColor = plotutil.Color(len(AllTargets()))

// targetColor gives every known target the same colour in every chart.
func targetColor(name string) color.Color {
	if i := slices.Index(AllTargets(), name); i >= 0 {
		return plotutil.Color(i)
	}
	return nil
}
