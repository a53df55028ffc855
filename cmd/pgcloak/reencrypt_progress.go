package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/pgcloak/pgcloak/reencrypt"
)

// progressView shows a re-encryption's progress on stdout: on a terminal
// one line redrawn in place (bar, rows, rate, ETA); otherwise a plain line
// when a column starts and every plainEvery. It is called from the
// engine's goroutine only.
type progressView struct {
	w       io.Writer
	off     bool // --json: stdout is for the JSON document
	tty     bool
	now     func() time.Time
	last    time.Time
	column  string // the column being shown
	drawn   bool   // a terminal line is on screen
	lastLen int
}

const (
	ttyEvery   = 200 * time.Millisecond
	plainEvery = 10 * time.Second
	barWidth   = 24
)

func newProgressView(g *globals, off bool) *progressView {
	return &progressView{w: g.stdout, off: off, tty: isTerminal(g.stdout), now: time.Now}
}

func (v *progressView) update(p reencrypt.Progress) {
	if v.off {
		return
	}
	now := v.now()
	if p.Column != v.column {
		v.finishLine()
		v.column, v.last = p.Column, time.Time{}
		if !v.tty && !p.Final {
			fmt.Fprintf(v.w, "%s: re-encrypting to %s version %d (job %d), %s\n", p.Column, p.Keyring, p.ToVersion, p.Job, rowsText(p))
			v.last = now
		}
	}
	if p.Final {
		if v.tty && v.drawn {
			v.draw(p)
			v.finishLine()
		}
		return
	}
	switch {
	case v.tty && now.Sub(v.last) >= ttyEvery:
		v.draw(p)
		v.last = now
	case !v.tty && now.Sub(v.last) >= plainEvery:
		fmt.Fprintln(v.w, plainLine(p))
		v.last = now
	}
}

// done ends a line left on the terminal.
func (v *progressView) done() { v.finishLine() }

func (v *progressView) finishLine() {
	if v.drawn {
		fmt.Fprintln(v.w)
		v.drawn, v.lastLen = false, 0
	}
}

// draw redraws the terminal line.
func (v *progressView) draw(p reencrypt.Progress) {
	line := p.Column + "  " + bar(p) + "  " + stats(p)
	pad := ""
	if n := v.lastLen - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	fmt.Fprint(v.w, "\r"+line+pad)
	v.drawn, v.lastLen = true, len(line)
}

func bar(p reencrypt.Progress) string {
	if p.Total <= 0 {
		return "[" + strings.Repeat("?", barWidth) + "]"
	}
	frac := min(1, float64(p.Done)/float64(p.Total))
	full := int(frac * barWidth)
	return fmt.Sprintf("[%s%s] %3d%%", strings.Repeat("#", full), strings.Repeat("-", barWidth-full), int(frac*100))
}

func rowsText(p reencrypt.Progress) string {
	if p.Total < 0 {
		return fmt.Sprintf("%d rows", p.Done)
	}
	return fmt.Sprintf("%d/%d rows", p.Done, p.Total)
}

func stats(p reencrypt.Progress) string {
	s := fmt.Sprintf("%s  %.0f rows/s", rowsText(p), p.Rate)
	if eta := p.ETA(); eta > 0 {
		s += "  ETA " + eta.Round(time.Second).String()
	}
	if p.Pass > 1 {
		s += fmt.Sprintf("  pass %d", p.Pass)
	}
	if p.Pause > 0 {
		s += "  backing off " + p.Pause.Round(100*time.Millisecond).String()
	}
	if p.Failed > 0 {
		s += fmt.Sprintf("  %d unchanged", p.Failed)
	}
	return s
}

func plainLine(p reencrypt.Progress) string {
	s := p.Column + ": " + rowsText(p)
	if p.Total > 0 {
		s += fmt.Sprintf(" (%d%%)", int(min(1, float64(p.Done)/float64(p.Total))*100))
	}
	s += fmt.Sprintf(", %.0f rows/s", p.Rate)
	if eta := p.ETA(); eta > 0 {
		s += ", ETA " + eta.Round(time.Second).String()
	}
	if p.Pause > 0 {
		s += ", backing off " + p.Pause.Round(100*time.Millisecond).String()
	}
	return s
}
