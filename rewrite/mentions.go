package rewrite

import "strings"

// MentionsConfigured reports whether sql could touch a table with
// configured columns, without parsing it. It looks up every word of the
// text (inside strings and comments too, and both as written and folded to
// lower case) and every double-quoted identifier with cat.Schemas, so it has
// no false negatives for any spelling PostgreSQL accepts; it may have false
// positives. Unicode-escaped identifiers (U&"…") always count as a mention.
func MentionsConfigured(sql string, cat Catalog) bool {
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == '"':
			j := i + 1
			var b strings.Builder
			for j < len(sql) {
				if sql[j] == '"' {
					if j+1 < len(sql) && sql[j+1] == '"' {
						b.WriteByte('"')
						j += 2
						continue
					}
					break
				}
				b.WriteByte(sql[j])
				j++
			}
			name := b.String()
			if known(cat, name) || known(cat, strings.ToLower(name)) {
				return true
			}
			// Continue inside the quotes too: words in them are checked
			// below (harmless false positives).
			i++
		case isIdentByte(c):
			j := i
			upper := false
			for j < len(sql) && isIdentByte(sql[j]) {
				if sql[j] >= 'A' && sql[j] <= 'Z' {
					upper = true
				}
				j++
			}
			w := sql[i:j]
			if (w == "U" || w == "u") && j+1 < len(sql) && sql[j] == '&' && sql[j+1] == '"' {
				return true
			}
			if known(cat, w) || (upper && known(cat, strings.ToLower(w))) {
				return true
			}
			if strings.IndexByte(w, '$') >= 0 && mentionsParts(w, cat) {
				// $ may also delimit a dollar quote ($$customers…).
				return true
			}
			i = j
		default:
			i++
		}
	}
	return false
}

func known(cat Catalog, name string) bool {
	return name != "" && len(cat.Schemas(name)) > 0
}

func isIdentByte(c byte) bool {
	return c == '_' || c == '$' || c >= 0x80 ||
		(c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

func mentionsParts(w string, cat Catalog) bool {
	for _, part := range strings.Split(w, "$") {
		if known(cat, part) || known(cat, strings.ToLower(part)) {
			return true
		}
	}
	return false
}
