package main

import (
	"bytes"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the reporter's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestProgressPlainLines(t *testing.T) {
	var w syncBuffer
	var done atomic.Int64
	p := startProgress(&w, false, 2*time.Millisecond, "demo", 100, done.Load)
	for i := range 10 {
		done.Store(int64(10 * (i + 1)))
		time.Sleep(3 * time.Millisecond)
	}
	p.finish()
	lines := strings.Split(strings.TrimSuffix(w.String(), "\n"), "\n")
	if len(lines) < 3 {
		t.Fatalf("want periodic lines, got %q", w.String())
	}
	for _, l := range lines {
		if !progressLine.MatchString(l) {
			t.Errorf("not a progress line: %q", l)
		}
	}
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "demo: 100/100 files (100%), ") || !strings.Contains(last, " in ") {
		t.Errorf("last line %q", last)
	}
}

func TestProgressBar(t *testing.T) {
	var w syncBuffer
	var done atomic.Int64
	p := newProgress(&w, true, time.Hour, "demo", 200, done.Load)
	p.width = func() int { return 100 }
	p.start()
	done.Store(50)
	p.report(false)
	done.Store(200)
	p.finish()
	s := w.String()
	if !strings.HasPrefix(s, "\r\x1b[K") || !strings.HasSuffix(s, "\n") || strings.Count(s, "\n") != 1 {
		t.Errorf("the bar must redraw one line in place and end it once: %q", s)
	}
	for _, want := range []string{"50/200 files  25%", "ETA ", "files/s", "200/200 files 100%", "[" + strings.Repeat("█", 10)} {
		if !strings.Contains(s, want) {
			t.Errorf("bar lacks %q: %q", want, s)
		}
	}
	// Too narrow a terminal: the numbers without the bar.
	p = newProgress(&w, true, time.Hour, "demo", 200, done.Load)
	p.width = func() int { return 30 }
	p.start().finish()
	if s := w.String(); strings.ContainsAny(s[strings.LastIndex(s, "\r"):], "█░") {
		t.Errorf("bar drawn on a narrow terminal: %q", s)
	}
}

func TestProgressLinePattern(t *testing.T) {
	for _, l := range []string{
		"demo: 1/611 files (0%), 10 files/s, ETA 1m0s",
		"demo: 0/10 files (0%), 0 files/s, ETA ?",
		"baseline: 5/10 files (50%), 3 files/s, ETA 1h2m3s",
		"demo: 10/10 files (100%), 7144 files/s, in 1.6s",
		"demo: 10/10 files (100%), 7144 files/s, in 350ms",
		"demo: 10/10 files (100%), 7144 files/s, in 20µs",
	} {
		if !progressLine.MatchString(l) {
			t.Errorf("%q does not match", l)
		}
	}
	for _, l := range []string{"demo: 1/2 files", "\rdemo: 1/2 files (50%), 1 files/s, ETA 1s", "demo: 1/2 files (50%), 1 files/s, ETA soon"} {
		if progressLine.MatchString(l) {
			t.Errorf("%q matches", l)
		}
	}
}
