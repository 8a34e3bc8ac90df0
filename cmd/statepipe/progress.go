package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// progress reports how far a job is: on a terminal a bar redrawn in place
// (files, rate, ETA); otherwise a plain line every tick, which reads well
// in a log or a CI transcript.
type progress struct {
	w     io.Writer
	bar   bool
	tick  time.Duration
	label string
	total int64
	done  func() int64
	begin time.Time
	width func() int // the terminal's columns

	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
	final time.Duration // the job's time, given to finishAt
}

// barRefresh is how often the bar is redrawn.
const barRefresh = 100 * time.Millisecond

// startProgress reports on done() out of total until finish is called.
func startProgress(w io.Writer, bar bool, tick time.Duration, label string, total int64, done func() int64) *progress {
	return newProgress(w, bar, tick, label, total, done).start()
}

func newProgress(w io.Writer, bar bool, tick time.Duration, label string, total int64, done func() int64) *progress {
	return &progress{
		w: w, bar: bar, tick: tick, label: label, total: total, done: done,
		begin: time.Now(), stop: make(chan struct{}),
		width: func() int { return terminalWidth(w) },
	}
}

func (p *progress) start() *progress {
	every := p.tick
	if p.bar {
		every = barRefresh
	}
	p.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.report(false)
			case <-p.stop:
				return
			}
		}
	})
	return p
}

// finish stops the reports and prints the final state.
func (p *progress) finish() { p.finishAt(time.Since(p.begin)) }

// finishAt is finish with the job's time as the caller measured it, so
// that the last line and the summary give the same rate. Only the first
// call of finish or finishAt counts.
func (p *progress) finishAt(elapsed time.Duration) {
	p.once.Do(func() {
		close(p.stop)
		p.wg.Wait()
		p.final = elapsed
		p.report(true)
	})
}

func (p *progress) report(final bool) {
	n, elapsed := p.done(), time.Since(p.begin)
	if final && p.final > 0 {
		elapsed = p.final
	}
	if !final && !p.bar && n >= p.total {
		// All done: the final line follows, with the job's time. A
		// periodic line now would be a second "100%" with another rate.
		return
	}
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(n) / s
	}
	pct := 0.0
	if p.total > 0 {
		pct = 100 * float64(n) / float64(p.total)
	}
	eta := "ETA ?"
	switch {
	case final:
		eta = "in " + round(elapsed).String()
	case rate > 0:
		eta = "ETA " + round(time.Duration(float64(p.total-n)/rate*float64(time.Second))).String()
	}
	if !p.bar {
		fmt.Fprintf(p.w, "%s: %d/%d files (%.0f%%), %.0f files/s, %s\n", p.label, n, p.total, pct, rate, eta)
		return
	}
	// The numbers keep their width as they grow, so the bar keeps its
	// length: the files done padded to the total's digits, the ETA to its
	// widest.
	digits := len(fmt.Sprint(p.total))
	stats := fmt.Sprintf(" %*d/%d files %3.0f%% %6.0f files/s %-13s", digits, n, p.total, pct, rate, eta)
	// The bar takes what the terminal's width leaves; the line stays
	// shorter than the width, or the terminal wraps it and every redraw
	// adds a line.
	width := p.width()
	cells := min(40, width-len(p.label)-len(stats)-4)
	line := p.label + stats
	if cells >= 10 {
		full := int(float64(cells) * pct / 100)
		full = min(max(full, 0), cells)
		line = p.label + " [" + strings.Repeat("█", full) + strings.Repeat("░", cells-full) + "]" + stats
	} else if len(line) >= width {
		// No room for a bar, nor for the padded numbers: the short form,
		// cut if even that is too long.
		line = fmt.Sprintf("%s %d/%d %.0f%% %.0f/s %s", p.label, n, p.total, pct, rate, eta)
		if len(line) >= width {
			line = strings.ToValidUTF8(line[:max(0, width-1)], "")
		}
	}
	line = strings.TrimRight(line, " ")
	// \r and erase-line redraw in place; the final report ends the line.
	end := ""
	if final {
		end = "\n"
	}
	fmt.Fprintf(p.w, "\r\x1b[K%s%s", line, end)
}

// terminalWidth returns the columns of the terminal w writes to, through
// a lockedWriter; 80 if w is no terminal.
func terminalWidth(w io.Writer) int {
	if l, ok := w.(*lockedWriter); ok {
		w = l.w
	}
	if f, ok := w.(*os.File); ok {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 0 {
			return cols
		}
	}
	return 80
}

// round keeps durations readable: 1.2s, 35ms.
func round(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(time.Millisecond)
	case d >= time.Microsecond:
		return d.Round(time.Microsecond)
	default:
		return d // 420ns, not 0s
	}
}
