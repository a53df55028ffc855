package config

import (
	"fmt"
	"sort"
	"strings"
)

// Problem is one thing wrong with a configuration file.
type Problem struct {
	File string // path of the file as given to Load / Parse
	Line int    // 1-based; problems about the whole file use line 1
	Msg  string // one line, no trailing period
}

// String formats the problem as "FILE:LINE: message".
func (p Problem) String() string {
	return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
}

// Problems is every problem found in one file, ordered by line. It implements
// error; a nil or empty Problems is never returned as an error.
type Problems []Problem

// Error returns one "FILE:LINE: message" line per problem.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// sortByLine orders problems by line, keeping the discovery order within a
// line.
func (ps Problems) sortByLine() {
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Line < ps[j].Line })
}
