package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// parseDuration parses a positive duration written like Go's
// time.ParseDuration ("30s", "1h30m", "250ms"), extended with a leading
// day count: "90d", "1d12h", "1.5d". A day is 24 hours.
func parseDuration(s string) (time.Duration, error) {
	bad := fmt.Errorf(`invalid duration %q (write e.g. "30s", "5m", "12h" or "90d")`, s)
	rest := strings.TrimSpace(s)
	var total time.Duration
	if i := strings.IndexByte(rest, 'd'); i >= 0 {
		days, err := strconv.ParseFloat(rest[:i], 64)
		if err != nil || days < 0 || strings.ContainsAny(rest[:i], "eEinfINFxX_+-") {
			return 0, bad
		}
		if days*24 > math.MaxInt64/float64(time.Hour) {
			return 0, fmt.Errorf("duration %q is too long", s)
		}
		total = time.Duration(days * 24 * float64(time.Hour))
		rest = rest[i+1:]
	}
	if rest != "" {
		d, err := time.ParseDuration(rest)
		if err != nil || d < 0 || strings.HasPrefix(rest, "+") {
			return 0, bad
		}
		if total > math.MaxInt64-d {
			return 0, fmt.Errorf("duration %q is too long", s)
		}
		total += d
	}
	if total <= 0 {
		if strings.TrimSpace(s) == "" {
			return 0, bad
		}
		return 0, fmt.Errorf("duration %q must be greater than zero", s)
	}
	return total, nil
}

// parseSize parses a byte count written as a string: "1048576", "512KiB",
// "64MiB", "1GiB" (binary units) or "64kB", "10MB", "1GB" (decimal units).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
		{"kB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1},
	}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf(`invalid size %q (write a byte count such as 1048576, "512KiB" or "64MiB")`, s)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}
