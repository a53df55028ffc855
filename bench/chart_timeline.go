package bench

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// TimelineMarker is a vertical line at an instant, labelled at the top.
type TimelineMarker struct {
	At    float64
	Label string
	Left  bool // the label sits left of the line (else right), so two close markers stay readable
}

// TimelineLevel is a dashed horizontal segment from From to To at Y (the
// median of a window).
type TimelineLevel struct {
	From, To, Y float64
}

// TimelineChart is one value over time (TPS per second) with labelled
// event markers, shaded spans and level segments.
type TimelineChart struct {
	Title, XLabel, YLabel string
	Name                  string    // legend of the line
	X, Y                  []float64 // the line
	Markers               []TimelineMarker
	Shades                [][2]float64 // [from, to] spans, shaded
	ShadeName             string       // legend of the shading
	Levels                []TimelineLevel
	LevelName             string  // legend of the levels
	XMax                  float64 // right end of the time axis; at least the last x and marker
}

const (
	timelineWidth  = 10 * vg.Inch
	timelineHeight = 4.5 * vg.Inch
)

var (
	timelineLine   = color.RGBA{R: 0x20, G: 0x60, B: 0xc0, A: 0xff}
	timelineMarker = color.RGBA{R: 0xc0, G: 0x20, B: 0x20, A: 0xff}
	timelineShade  = color.RGBA{R: 0xff, G: 0xe0, B: 0xa0, A: 0xff}
	timelineLevel  = color.RGBA{R: 0x40, G: 0x40, B: 0x40, A: 0xff}
)

// build makes the plot.
func (c TimelineChart) build() (*plot.Plot, error) {
	if len(c.X) == 0 || len(c.X) != len(c.Y) {
		return nil, fmt.Errorf("bench: timeline %q: %d x and %d y values", c.Title, len(c.X), len(c.Y))
	}
	top := 0.0
	for _, y := range c.Y {
		if !math.IsNaN(y) && !math.IsInf(y, 0) {
			top = max(top, y)
		}
	}
	for _, l := range c.Levels {
		top = max(top, l.Y)
	}
	// Headroom for the marker labels.
	top = max(top*1.3, 1)

	p := plot.New()
	p.Title.Text = c.Title
	p.X.Label.Text, p.Y.Label.Text = c.XLabel, c.YLabel
	p.Y.Min, p.Y.Max = 0, top
	p.X.Min, p.X.Max = 0, max(c.XMax, c.X[len(c.X)-1])
	for _, m := range c.Markers {
		p.X.Max = max(p.X.Max, m.At)
	}
	p.Y.Tick.Marker = plainTicks{}
	p.X.Tick.Marker = stepTicks(p.X.Max)
	// Bottom left: the marker labels take the top.
	p.Legend.Left = true
	grid := plotter.NewGrid()
	p.Add(grid)

	for i, s := range c.Shades {
		poly, err := plotter.NewPolygon(plotter.XYs{{X: s[0], Y: 0}, {X: s[1], Y: 0}, {X: s[1], Y: top}, {X: s[0], Y: top}})
		if err != nil {
			return nil, fmt.Errorf("bench: timeline %q: %w", c.Title, err)
		}
		poly.Color = timelineShade
		poly.LineStyle.Width = 0
		p.Add(poly)
		if i == 0 && c.ShadeName != "" {
			p.Legend.Add(c.ShadeName, poly)
		}
	}

	xys := make(plotter.XYs, len(c.X))
	for i := range c.X {
		xys[i] = plotter.XY{X: c.X[i], Y: c.Y[i]}
	}
	line, err := plotter.NewLine(xys)
	if err != nil {
		return nil, fmt.Errorf("bench: timeline %q: %w", c.Title, err)
	}
	line.Color, line.Width = timelineLine, vg.Points(1.2)
	p.Add(line)
	if c.Name != "" {
		p.Legend.Add(c.Name, line)
	}

	for i, l := range c.Levels {
		seg, err := plotter.NewLine(plotter.XYs{{X: l.From, Y: l.Y}, {X: l.To, Y: l.Y}})
		if err != nil {
			return nil, fmt.Errorf("bench: timeline %q: %w", c.Title, err)
		}
		seg.Color, seg.Width, seg.Dashes = timelineLevel, vg.Points(1.5), []vg.Length{vg.Points(5), vg.Points(3)}
		p.Add(seg)
		if i == 0 && c.LevelName != "" {
			p.Legend.Add(c.LevelName, seg)
		}
	}

	for _, m := range c.Markers {
		v, err := plotter.NewLine(plotter.XYs{{X: m.At, Y: 0}, {X: m.At, Y: top}})
		if err != nil {
			return nil, fmt.Errorf("bench: timeline %q: %w", c.Title, err)
		}
		v.Color, v.Width, v.Dashes = timelineMarker, vg.Points(1), []vg.Length{vg.Points(3), vg.Points(2)}
		p.Add(v)
		lbl, err := plotter.NewLabels(plotter.XYLabels{XYs: plotter.XYs{{X: m.At, Y: top}}, Labels: []string{m.Label}})
		if err != nil {
			return nil, fmt.Errorf("bench: timeline %q: %w", c.Title, err)
		}
		// Rotated a quarter turn: the text runs down from the top of the
		// plot, beside the line.
		ts := &lbl.TextStyle[0]
		ts.Font.Size = vg.Points(8)
		ts.Color = timelineMarker
		ts.Rotation = math.Pi / 2
		ts.XAlign = draw.XRight
		ts.YAlign = draw.YTop
		lbl.Offset = vg.Point{X: vg.Points(2), Y: -vg.Points(2)}
		if m.Left {
			ts.YAlign = draw.YBottom
			lbl.Offset.X = -vg.Points(2)
		}
		p.Add(lbl)
	}
	return p, nil
}

// stepTicks labels the time axis every 5 s up to a minute, every 10 s up
// to two, then every 30 s.
func stepTicks(span float64) plot.ConstantTicks {
	step := 30.0
	switch {
	case span <= 60:
		step = 5
	case span <= 120:
		step = 10
	}
	var ticks []plot.Tick
	for v := 0.0; v <= span+1e-9; v += step {
		ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', -1, 64)})
	}
	return ticks
}

// WritePNG renders the chart as PNG.
func (c TimelineChart) WritePNG(w io.Writer) error {
	p, err := c.build()
	if err != nil {
		return err
	}
	img := vgimg.New(timelineWidth, timelineHeight)
	p.Draw(draw.New(img))
	_, err = vgimg.PngCanvas{Canvas: img}.WriteTo(w)
	return err
}

// Chart draws the scenario: TPS of every second (at the middle of its
// interval), the re-encryption shaded, the median of each window dashed,
// and a marker at the rotation, the start and end of the re-encryption
// and the end of the retirement.
func (r *RotationResult) Chart() TimelineChart {
	c := TimelineChart{
		Title: fmt.Sprintf("TPS per second through pgcloak-enc, key rotation at %.0f s (%s, %d clients)",
			r.RotateAt.Seconds(), r.Workload, r.Clients),
		XLabel: "seconds since pgbench started", YLabel: "transactions per second",
		Name: "TPS", ShadeName: "re-encryption", LevelName: "median of the window",
		XMax: r.Duration.Seconds(),
	}
	for _, p := range r.Series {
		c.X = append(c.X, (p.Start+p.End)/2)
		c.Y = append(c.Y, p.TPS)
		c.XMax = max(c.XMax, p.End)
	}
	if e, ok := r.Event(EventRotate); ok {
		c.Markers = append(c.Markers, TimelineMarker{At: e.Start, Label: "rotate", Left: true})
	}
	if e, ok := r.Event(EventReencrypt); ok {
		c.Markers = append(c.Markers,
			TimelineMarker{At: e.Start, Label: "re-encryption start"},
			TimelineMarker{At: e.End, Label: "re-encryption end", Left: true})
		c.Shades = append(c.Shades, [2]float64{e.Start, e.End})
	}
	if e, ok := r.Event(EventRetire); ok {
		c.Markers = append(c.Markers, TimelineMarker{At: e.End, Label: "retire"})
	}
	a := r.Analysis()
	for _, w := range []RotationWindow{a.Before, a.During, a.After} {
		if w.Seconds > 0 {
			c.Levels = append(c.Levels, TimelineLevel{From: w.From, To: w.To, Y: w.MedianTPS})
		}
	}
	return c
}
