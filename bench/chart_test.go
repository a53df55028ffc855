package bench

import (
	"bytes"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBarChartPNG(t *testing.T) {
	c := BarChart{Title: "t", YLabel: "y", Categories: []string{"a\n8 clients", "b\n8 clients"},
		Series: []BarSeries{{Name: "direct", Values: []float64{3, 4}}, {Name: "pgcloak", Values: []float64{2, math.NaN()}}}}
	var b bytes.Buffer
	if err := c.WritePNG(&b); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&b)
	if err != nil {
		t.Fatal(err)
	}
	if r := img.Bounds(); r.Dx() < 300 || r.Dy() < 200 {
		t.Errorf("image %v", r)
	}
	c.Series[1].Values = []float64{1}
	if err := c.WritePNG(&b); err == nil {
		t.Error("series shorter than the categories accepted")
	}
	if err := (BarChart{Title: "empty"}).WritePNG(&b); err == nil {
		t.Error("empty chart accepted")
	}
}

// Four panels wrap into two rows of three columns.
func TestPanelsPNGLayout(t *testing.T) {
	one := BarChart{Title: "x", Categories: []string{"8 clients"}, Series: []BarSeries{{Name: "direct", Values: []float64{1}}}}
	var b bytes.Buffer
	if err := (Panels{Charts: []BarChart{one}}).WritePNG(&b); err != nil {
		t.Fatal(err)
	}
	single, err := png.Decode(&b)
	if err != nil {
		t.Fatal(err)
	}
	b.Reset()
	if err := (Panels{Charts: []BarChart{one, one, one, one}}).WritePNG(&b); err != nil {
		t.Fatal(err)
	}
	four, err := png.Decode(&b)
	if err != nil {
		t.Fatal(err)
	}
	near := func(a, b int) bool { return a-b <= 3 && b-a <= 3 } // vg lengths round to pixels
	if !near(four.Bounds().Dx(), 3*single.Bounds().Dx()) || !near(four.Bounds().Dy(), 2*single.Bounds().Dy()) {
		t.Errorf("4 panels %v, 1 panel %v", four.Bounds(), single.Bounds())
	}
	if err := (Panels{}).WritePNG(&b); err == nil {
		t.Error("no panels accepted")
	}
}

func TestReportWriteFiles(t *testing.T) {
	rep := sampleReport()
	dir := t.TempDir()
	paths, err := rep.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, "2026-11-25T093000Z-passthrough")
	want := []string{base + ".png", base + "-cpu.png", base + ".json", base + ".md"}
	if strings.Join(paths, " ") != strings.Join(want, " ") {
		t.Errorf("paths %v", paths)
	}
	md, err := os.ReadFile(base + ".md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "(2026-11-25T093000Z-passthrough.png)") {
		t.Error("markdown does not link the chart")
	}
	// The CPU chart leaves out direct (no proxy process).
	cpu := rep.CPUChart()
	if len(cpu.Charts) != 1 {
		t.Fatalf("cpu chart %+v", cpu)
	}
	if s := cpu.Charts[0].Series; len(s) != 2 || s[0].Name != TargetPgBouncer || !approx(s[1].Values[0], 16) {
		t.Errorf("cpu chart series %+v", s)
	}
	tps := rep.TPSChart()
	if len(tps.Charts) != 1 || len(tps.Charts[0].Series) != 3 || tps.Charts[0].Series[2].Values[0] != 24000 ||
		tps.Charts[0].Categories[0] != "8 clients" {
		t.Errorf("tps chart %+v", tps)
	}
	rep.Settings.Targets = []string{TargetDirect}
	if cpu := rep.CPUChart(); len(cpu.Charts) != 0 {
		t.Errorf("cpu chart without a proxy: %+v", cpu)
	}
}

// An encrypted workload and its baseline share one panel, so they are
// drawn on the same scale; the baseline gets no panel of its own.
func TestPairedWorkloadsSharePanels(t *testing.T) {
	rep := sampleEncReport()
	tps := rep.TPSChart()
	if len(tps.Charts) != 1 {
		t.Fatalf("%d panels: %+v", len(tps.Charts), tps.Charts)
	}
	ch := tps.Charts[0]
	if ch.Title != "enc-prepared vs plain-prepared: TPS, median of 3" || len(ch.Series) != 2 ||
		ch.Series[0].Name != "enc-prepared" || ch.Series[1].Name != "plain-prepared" ||
		ch.Series[0].Values[0] != 9500 || ch.Series[1].Values[0] != 10000 || ch.Series[0].Color == ch.Series[1].Color {
		t.Errorf("panel %+v", ch)
	}
	cpu := rep.CPUChart()
	if len(cpu.Charts) != 1 || !approx(cpu.Charts[0].Series[0].Values[0], 60) || !approx(cpu.Charts[0].Series[1].Values[0], 40) {
		t.Errorf("cpu panels %+v", cpu.Charts)
	}
	var b bytes.Buffer
	if err := tps.WritePNG(&b); err != nil || b.Len() == 0 {
		t.Errorf("png: %v", err)
	}
}
