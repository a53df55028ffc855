package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// BaseName is the file name stem of a report: "<UTC timestamp>-<label>".
func (r *Report) BaseName() string {
	label := strings.Map(func(c rune) rune {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			return c
		}
		return '-'
	}, r.Label)
	if label == "" {
		label = "bench"
	}
	return r.Started.UTC().Format("2006-01-02T150405Z") + "-" + label
}

// WriteFiles writes BASE.md, BASE.json, BASE.png (median TPS) and, when a
// proxy target ran, BASE-cpu.png (proxy CPU per transaction) into dir, and
// BASE-timeline.png (TPS per second of the rotation scenario) when the
// scenario ran; it returns their paths. The Markdown links the charts.
func (r *Report) WriteFiles(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	base := filepath.Join(dir, r.BaseName())
	var paths []string
	write := func(path string, data []byte) error {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		paths = append(paths, path)
		return nil
	}

	type namedChart struct {
		suffix, alt string
		chart       interface{ WritePNG(io.Writer) error }
	}
	var charts []namedChart
	if len(r.Runs) > 0 {
		charts = append(charts, namedChart{".png", "median TPS", r.TPSChart()})
		if cpu := r.CPUChart(); len(cpu.Charts) > 0 {
			charts = append(charts, namedChart{"-cpu.png", "proxy CPU per transaction", cpu})
		}
	}
	if r.Rotation != nil && len(r.Rotation.Series) > 0 {
		charts = append(charts, namedChart{"-timeline.png", "TPS per second during the key rotation", r.Rotation.Chart()})
	}
	var md bytes.Buffer
	if err := r.WriteMarkdown(&md); err != nil {
		return nil, err
	}
	if len(charts) > 0 {
		md.WriteString("\n## Charts\n\n")
	}
	for _, c := range charts {
		var png bytes.Buffer
		if err := c.chart.WritePNG(&png); err != nil {
			return paths, err
		}
		if err := write(base+c.suffix, png.Bytes()); err != nil {
			return paths, err
		}
		fmt.Fprintf(&md, "![%s](%s)\n\n", c.alt, filepath.Base(base+c.suffix))
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return paths, fmt.Errorf("bench: %w", err)
	}
	if err := write(base+".json", append(js, '\n')); err != nil {
		return paths, err
	}
	if err := write(base+".md", md.Bytes()); err != nil {
		return paths, err
	}
	return paths, nil
}
