package bench

import (
	"math"
	"slices"
	"testing"
)

func TestMedian(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		xs   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{10, nan, 2, 4}, 4},
		{[]float64{9, 1, 8, 2, 7}, 7},
	}
	for _, tt := range tests {
		in := slices.Clone(tt.xs)
		if got := Median(in); got != tt.want {
			t.Errorf("Median(%v) = %v, want %v", tt.xs, got, tt.want)
		}
		if !slices.EqualFunc(in, tt.xs, func(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }) {
			t.Errorf("Median modified its input: %v", in)
		}
	}
	if !math.IsNaN(Median(nil)) || !math.IsNaN(Median([]float64{nan})) {
		t.Error("Median of nothing is not NaN")
	}
}

func TestMinMaxAndRatio(t *testing.T) {
	lo, hi := MinMax([]float64{math.NaN(), 4, -2, 9, 3})
	if lo != -2 || hi != 9 {
		t.Errorf("MinMax = %v, %v", lo, hi)
	}
	if lo, hi := MinMax(nil); !math.IsNaN(lo) || !math.IsNaN(hi) {
		t.Errorf("MinMax(nil) = %v, %v", lo, hi)
	}
	if r := Ratio(3, 2); r != 1.5 {
		t.Errorf("Ratio(3,2) = %v", r)
	}
	for _, r := range []float64{Ratio(1, 0), Ratio(math.NaN(), 1), Ratio(1, math.NaN())} {
		if !math.IsNaN(r) {
			t.Errorf("undefined ratio = %v, want NaN", r)
		}
	}
}
