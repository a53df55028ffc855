package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
)

// JSONSink writes entries as JSON lines (one object per line, the Entry
// fields with hashes in hex) for a SIEM. It is safe for concurrent use;
// each line is written with a single Write call. Lines arrive in commit
// order per writer, which is not always seq order across concurrent
// writers: sort by seq. A SIEM can recompute every hash from the line
// (Entry.Encode documents the encoding) and so verify its own copy.
type JSONSink struct {
	mu sync.Mutex
	w  io.Writer
}

// NewJSONSink returns a sink writing to w. The sink does not close w.
func NewJSONSink(w io.Writer) *JSONSink { return &JSONSink{w: w} }

// Write appends e as one line.
func (s *JSONSink) Write(e Entry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("audit: sink: %w", err)
	}
	b = append(b, '\n')
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.w.Write(b); err != nil {
		return fmt.Errorf("audit: sink: entry %d: %w", e.Seq, err)
	}
	return nil
}
