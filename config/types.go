package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// modKind says which type modifiers a type accepts.
type modKind int

const (
	modNone      modKind = 1 // no modifier
	modLength    modKind = 2 // (n)
	modPrecScale modKind = 3 // (p) or (p,s)
	modFracSec   modKind = 4 // (p), fractional-second digits
	modFloatBits modKind = 5 // float(p): precision in binary digits picks float4 or float8
)

// typeAliases maps every accepted spelling (lower case, single spaces,
// modifier removed) to the canonical PostgreSQL type name.
var typeAliases = map[string]string{
	"text":                        "text",
	"varchar":                     "varchar",
	"character varying":           "varchar",
	"int2":                        "int2",
	"smallint":                    "int2",
	"int4":                        "int4",
	"int":                         "int4",
	"integer":                     "int4",
	"int8":                        "int8",
	"bigint":                      "int8",
	"numeric":                     "numeric",
	"decimal":                     "numeric",
	"float4":                      "float4",
	"real":                        "float4",
	"float8":                      "float8",
	"double precision":            "float8",
	"float":                       "float",
	"bool":                        "bool",
	"boolean":                     "bool",
	"date":                        "date",
	"timestamp":                   "timestamp",
	"timestamp without time zone": "timestamp",
	"timestamptz":                 "timestamptz",
	"timestamp with time zone":    "timestamptz",
	"uuid":                        "uuid",
	"json":                        "json",
	"jsonb":                       "jsonb",
	"bytea":                       "bytea",
}

var typeMods = map[string]modKind{
	"text": modNone, "varchar": modLength, "int2": modNone, "int4": modNone, "int8": modNone,
	"numeric": modPrecScale, "float4": modNone, "float8": modNone, "float": modFloatBits,
	"bool": modNone, "date": modNone, "timestamp": modFracSec, "timestamptz": modFracSec,
	"uuid": modNone, "json": modNone, "jsonb": modNone, "bytea": modNone,
}

const supportedTypes = "text, varchar(n), int2/smallint, int4/integer, int8/bigint, numeric(p,s), " +
	"float4/real, float8/double precision, bool/boolean, date, timestamp(p), timestamptz(p), uuid, json, jsonb, bytea"

// ParseType checks that s is a supported PostgreSQL column type, with an
// optional modifier, and returns its canonical spelling: PostgreSQL's
// internal name plus the modifier, without spaces ("int8", "varchar(40)",
// "numeric(12,2)", "timestamptz(3)"). Spelling, case and spacing of the
// input do not matter ("Character Varying (40)", "timestamp(3) with time
// zone").
func ParseType(s string) (string, error) {
	t := strings.ToLower(strings.Join(strings.Fields(s), " "))
	if t == "" {
		return "", errors.New("empty type")
	}
	if strings.HasSuffix(t, "]") || strings.HasPrefix(t, "_") {
		return "", fmt.Errorf("type %q: arrays are not supported", s)
	}
	name, mods, hasMods := t, "", false
	if i := strings.IndexByte(t, '('); i >= 0 {
		j := strings.IndexByte(t[i:], ')')
		if j < 0 {
			return "", fmt.Errorf("type %q: missing ')'", s)
		}
		name = strings.TrimSpace(t[:i])
		mods, hasMods = t[i+1:i+j], true
		if rest := strings.TrimSpace(t[i+j+1:]); rest != "" {
			name += " " + rest // "timestamp(3) with time zone"
		}
	}
	canon, ok := typeAliases[name]
	if !ok {
		return "", fmt.Errorf("unsupported type %q (supported: %s)", s, supportedTypes)
	}
	kind := typeMods[canon]
	if !hasMods {
		if canon == "float" {
			return "float8", nil // PostgreSQL: float without precision is double precision
		}
		return canon, nil
	}
	if kind == modNone {
		return "", fmt.Errorf("type %q: %s takes no modifier", s, canon)
	}
	nums, err := parseMods(mods)
	if err != nil {
		return "", fmt.Errorf("type %q: %v", s, err)
	}
	switch kind {
	case modLength:
		if len(nums) != 1 || nums[0] < 1 || nums[0] > 10485760 {
			return "", fmt.Errorf("type %q: length must be one number in 1..10485760", s)
		}
		return fmt.Sprintf("%s(%d)", canon, nums[0]), nil
	case modPrecScale:
		if len(nums) > 2 || nums[0] < 1 || nums[0] > 1000 {
			return "", fmt.Errorf("type %q: precision must be in 1..1000", s)
		}
		if len(nums) == 1 {
			return fmt.Sprintf("%s(%d)", canon, nums[0]), nil
		}
		if nums[1] < -1000 || nums[1] > 1000 {
			return "", fmt.Errorf("type %q: scale must be in -1000..1000", s)
		}
		return fmt.Sprintf("%s(%d,%d)", canon, nums[0], nums[1]), nil
	case modFracSec:
		if len(nums) != 1 || nums[0] < 0 || nums[0] > 6 {
			return "", fmt.Errorf("type %q: precision must be one number in 0..6", s)
		}
		return fmt.Sprintf("%s(%d)", canon, nums[0]), nil
	case modFloatBits:
		switch {
		case len(nums) != 1 || nums[0] < 1 || nums[0] > 53:
			return "", fmt.Errorf("type %q: precision must be one number in 1..53", s)
		case nums[0] <= 24:
			return "float4", nil
		default:
			return "float8", nil
		}
	}
	return "", fmt.Errorf("type %q: unsupported modifier", s)
}

func parseMods(s string) ([]int, error) {
	parts := strings.Split(s, ",")
	nums := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("modifier %q is not an integer", strings.TrimSpace(p))
		}
		nums[i] = n
	}
	return nums, nil
}

// maxIdentLen is PostgreSQL's NAMEDATALEN - 1.
const maxIdentLen = 63

// parseQualified splits a possibly qualified SQL name into at most maxParts
// identifiers. Unquoted identifiers are folded to lower case as PostgreSQL
// does; "quoted" ones keep their case ("" is a literal quote).
func parseQualified(s string, maxParts int) ([]string, error) {
	var parts []string
	rest := strings.TrimSpace(s)
	for {
		var id string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			i := 1
			for {
				j := strings.IndexByte(rest[i:], '"')
				if j < 0 {
					return nil, fmt.Errorf("%q: unterminated quoted identifier", s)
				}
				b.WriteString(rest[i : i+j])
				i += j + 1
				if i < len(rest) && rest[i] == '"' {
					b.WriteByte('"')
					i++
					continue
				}
				break
			}
			id, rest = b.String(), rest[i:]
			if id == "" {
				return nil, fmt.Errorf("%q: empty quoted identifier", s)
			}
		} else {
			i := 0
			for i < len(rest) && isIdentByte(rest[i], i == 0) {
				i++
			}
			if i == 0 {
				return nil, fmt.Errorf("%q is not a valid SQL name", s)
			}
			id, rest = strings.ToLower(rest[:i]), rest[i:]
		}
		if len(id) > maxIdentLen {
			return nil, fmt.Errorf("%q: identifier longer than %d bytes", s, maxIdentLen)
		}
		parts = append(parts, id)
		if rest == "" {
			break
		}
		if rest[0] != '.' {
			return nil, fmt.Errorf("%q is not a valid SQL name", s)
		}
		rest = rest[1:]
	}
	if len(parts) > maxParts {
		if maxParts == 1 {
			return nil, fmt.Errorf("%q: give the bare column name", s)
		}
		return nil, fmt.Errorf("%q: give \"schema.table\" or \"table\"", s)
	}
	return parts, nil
}

func isIdentByte(c byte, first bool) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_', c >= 0x80:
		return true
	case c >= '0' && c <= '9', c == '$':
		return !first
	}
	return false
}
