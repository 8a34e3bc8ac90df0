package statepipe

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// syncBuffer is a bytes.Buffer safe for the handler's concurrent writes.
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

func TestLoggerLifecycleOnly(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := New[int](panicky{}, WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	g := p.NewGroup()
	for i := range 100 {
		v := i
		if i == 50 {
			v = -1 // panics in Start
		}
		if err := g.Submit(context.Background(), v); err != nil {
			t.Fatal(err)
		}
	}
	g.Close()
	for range g.Out() {
	}
	p.Close()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d log lines, want 3 (start, the panic, close): nothing per request\n%s", len(lines), buf.String())
	}
	for i, want := range []string{"statepipe: started", "statepipe: recovered panic", "statepipe: closed"} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d: %q, want %q", i, lines[i], want)
		}
	}
	if !strings.Contains(lines[1], "stage=Start") {
		t.Errorf("the panic line does not name the stage: %q", lines[1])
	}
}
