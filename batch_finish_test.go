package statepipe

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// finalBatch parks every request in a batcher that is its last step: after
// the flush, requests have no next stage and the flush goroutine finishes
// them itself.
type finalBatch struct{ bulk *Batcher[int] }

func (m *finalBatch) Start(r Request[int]) Request[int] { return m.bulk.Add(r) }
func (m *finalBatch) Close()                            {}

func TestBatchFinishesFinalRequests(t *testing.T) {
	m := &finalBatch{}
	m.bulk = NewBatcher(func(_ context.Context, b []Request[int]) error {
		for i := range b {
			if b[i].Data%5 == 0 {
				b[i].Err = context.Canceled // any error: these fail
			}
			b[i].Data *= 2
		}
		return nil
	}, BatchName("final"), MaxItems(10))
	p, err := New[int](m)
	if err != nil {
		t.Fatal(err)
	}
	g := p.NewGroup()
	const n = 100
	go submitNThenClose(t, g, n)
	seen := map[int]bool{}
	for r := range g.Out() {
		if seen[r.Data] {
			t.Fatalf("%d came out twice", r.Data)
		}
		seen[r.Data] = true
		if want := r.Data%10 == 0; (r.Err != nil) != want || r.Next != nil {
			t.Errorf("request %d: err %v, next set %v", r.Data, r.Err, r.Next != nil)
		}
	}
	p.Close()
	if len(seen) != n {
		t.Fatalf("%d of %d came out", len(seen), n)
	}
	s := p.Stats()
	if s.Completed != 80 || s.Failed != 20 || s.Submitted != n {
		t.Errorf("stats: %d completed, %d failed, %d submitted; want 80, 20, 100", s.Completed, s.Failed, s.Submitted)
	}
	edges := map[string]uint64{}
	for _, e := range p.Graph().Edges {
		edges[e.From+"->"+e.To] = e.Count
	}
	if edges["final->(done)"] != 80 || edges["final->(failed)"] != 20 || edges["Start->final"] != n {
		t.Errorf("edges %v", edges)
	}
}

// A batch that gathers while a flush runs is flushed when that flush ends,
// even if the flush sends nothing back to the workers (which would
// otherwise be what tells the batcher the engine is idle).
func TestBatchGatheredDuringFinalFlushDoesNotLinger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &finalBatch{}
		var calls []time.Duration
		start := time.Now()
		m.bulk = NewBatcher(func(context.Context, []Request[int]) error {
			calls = append(calls, time.Since(start))
			time.Sleep(10 * time.Millisecond)
			return nil
		}, MaxWait(time.Hour))
		p, err := New[int](m)
		if err != nil {
			t.Fatal(err)
		}
		g := p.NewGroup()
		if err := g.Submit(context.Background(), 1); err != nil { // flushed at once: nothing else runs
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
		if err := g.Submit(context.Background(), 2); err != nil { // gathers while the first flush runs
			t.Fatal(err)
		}
		for range 2 {
			<-g.Out()
		}
		if elapsed := time.Since(start); elapsed != 20*time.Millisecond {
			t.Errorf("both out after %v, want 20ms (the second flush right after the first)", elapsed)
		}
		if len(calls) != 2 || calls[1] != 10*time.Millisecond {
			t.Errorf("flush calls at %v, want [0s 10ms]", calls)
		}
		g.Close()
		p.Close()
	})
}

// With NoIdleFlush a lone request waits for MaxWait instead of leaving at
// once; Close still flushes what is pending.
func TestBatchNoIdleFlush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &finalBatch{}
		m.bulk = NewBatcher(func(context.Context, []Request[int]) error { return nil },
			MaxWait(50*time.Millisecond), NoIdleFlush())
		p, err := New[int](m)
		if err != nil {
			t.Fatal(err)
		}
		g := p.NewGroup()
		start := time.Now()
		if err := g.Submit(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		<-g.Out()
		if waited := time.Since(start); waited != 50*time.Millisecond {
			t.Errorf("lone request out after %v, want MaxWait (50ms)", waited)
		}
		if err := g.Submit(context.Background(), 2); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		p.Close() // flushes request 2 now, not after MaxWait
		if r := <-g.Out(); r.Data != 2 || time.Since(start) != 50*time.Millisecond {
			t.Errorf("request %d out at %v, want 2 at once on Close", r.Data, time.Since(start))
		}
		if f := m.bulk.Stats().Flushes; f[FlushLinger] != 1 || f[FlushShutdown] != 1 || f[FlushIdle] != 0 {
			t.Errorf("flushes by reason %v, want one linger and one shutdown, none idle", f)
		}
	})
}

// FlushTimeout ends the flush's context after d: a bulk call that would
// hang returns, and its error fails the batch.
func TestBatchFlushTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &finalBatch{}
		m.bulk = NewBatcher(func(ctx context.Context, _ []Request[int]) error {
			<-ctx.Done() // a call that never answers
			return ctx.Err()
		}, FlushTimeout(time.Second))
		p, err := New[int](m)
		if err != nil {
			t.Fatal(err)
		}
		g := p.NewGroup()
		start := time.Now()
		if err := g.Submit(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		r := <-g.Out()
		if r.Err != context.DeadlineExceeded || time.Since(start) != time.Second {
			t.Errorf("out after %v with %v, want DeadlineExceeded after 1s", time.Since(start), r.Err)
		}
		g.Close()
		p.Close()
	})
}

// A flush that gave up at FlushTimeout while its bulk call went on had its
// slice reused for the next batch, into which the abandoned call then wrote.
// Here the late write happens during the next flush, after the first
// request is out (so that it is ordered after the engine's last read).
func TestTimedOutFlushSliceIsNotReused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &finalBatch{}
		release, written := make(chan struct{}), make(chan struct{})
		calls := 0
		m.bulk = NewBatcher(func(ctx context.Context, b []Request[int]) error {
			if calls++; calls > 1 {
				for i := range b {
					b[i].Data *= 10
				}
				<-written // the abandoned call writes meanwhile
				return nil
			}
			go func() { // the first call's client, slower than FlushTimeout
				<-release
				for i := range b {
					b[i].Data = -1 // a late write into the batch it was given
				}
				close(written)
			}()
			<-ctx.Done()
			return ctx.Err()
		}, FlushTimeout(2*time.Millisecond), MaxItems(1))
		p, err := New[int](m, WithWorkers(1))
		if err != nil {
			t.Fatal(err)
		}
		g := p.NewGroup()
		mustSubmit(t, g, context.Background(), 1)
		if r := <-g.Out(); !errors.Is(r.Err, context.DeadlineExceeded) {
			t.Fatalf("first request: %v, want the flush's deadline", r.Err)
		}
		mustSubmit(t, g, context.Background(), 7)
		synctest.Wait() // the second flush runs
		close(release)
		if r := <-g.Out(); r.Data != 70 || r.Err != nil {
			t.Errorf("second request: %d, %v; want 70: its batch shared a slice with the abandoned call", r.Data, r.Err)
		}
		g.Close()
		p.Close()
	})
}
