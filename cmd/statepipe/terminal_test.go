package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/creack/pty"
)

// inTerminal runs the command with args in a process of its own whose
// stderr and stdout are a pseudo-terminal of cols columns, and returns
// what it wrote there.
func inTerminal(t *testing.T, cols uint16, args ...string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), asCommand+"=1")
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: cols, Rows: 40})
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	defer tty.Close()
	var out bytes.Buffer
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(&out, tty)
		copied <- err
	}()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("%v: %v", args, err)
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-waited
		t.Fatalf("%v: still running after 60s", args)
	}
	// Once the process is gone, reading the terminal ends with EIO.
	select {
	case err := <-copied:
		if err != nil && !errors.Is(err, syscall.EIO) {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the terminal's output did not end")
	}
	return out.String()
}

// redraws splits the terminal's output into the bar's redraws, each
// starting with a carriage return and an erase-line.
func redraws(out string) []string {
	var bars []string
	for _, part := range strings.Split(out, "\r\x1b[K")[1:] {
		line, _, _ := strings.Cut(part, "\r\n") // the final redraw ends the line
		bars = append(bars, line)
	}
	return bars
}

// Regression: the bar's width came from the locked writer around stderr,
// never a terminal, so it was always 80: in a narrower terminal every
// redraw wrapped, and the screen filled with stacked lines.
func TestProgressBarFitsNarrowTerminal(t *testing.T) {
	root, _ := writeTree(t, 1500)
	for _, cols := range []uint16{40, 60, 100} {
		out := inTerminal(t, cols, "demo", "--src", root, "--db", filepath.Join(t.TempDir(), "d.db"))
		bars := redraws(out)
		if len(bars) == 0 {
			t.Fatalf("%d columns: no bar drawn:\n%q", cols, out)
		}
		for _, b := range bars {
			if n := utf8.RuneCountInString(b); n >= int(cols) {
				t.Errorf("%d columns: a redraw of %d characters wraps: %q", cols, n, b)
			}
		}
		if last := bars[len(bars)-1]; !strings.Contains(last, "1511/1511") || !strings.Contains(last, " 100% ") {
			t.Errorf("%d columns: last redraw %q", cols, last)
		}
		if cols >= 100 && !strings.Contains(bars[len(bars)-1], "█") {
			t.Errorf("%d columns: no bar in %q", cols, bars[len(bars)-1])
		}
	}
}

// Regression: at a width where the bar is shorter than its most, it
// shrank as the numbers grew (files done, ETA), so it jittered.
func TestProgressBarKeepsItsLength(t *testing.T) {
	var w syncBuffer
	var done int64
	p := newProgress(&w, true, time.Hour, "demo", 12000, func() int64 { return done })
	p.width = func() int { return 80 }
	p.begin = time.Now().Add(-10 * time.Second) // rates of a real run
	for _, n := range []int64{0, 7, 95, 950, 9500, 12000} {
		done = n
		p.report(n == 12000)
	}
	bars := redraws(w.String())
	if len(bars) != 6 {
		t.Fatalf("%d redraws: %q", len(bars), w.String())
	}
	for _, b := range bars {
		cells := strings.Count(b, "█") + strings.Count(b, "░")
		if want := strings.Count(bars[0], "░"); cells != want {
			t.Errorf("bar of %d cells, the first had %d: %q", cells, want, b)
		}
		if n := utf8.RuneCountInString(b); n >= 80 {
			t.Errorf("redraw of %d characters in 80 columns: %q", n, b)
		}
	}
}
