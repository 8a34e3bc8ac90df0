package statepipe

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"testing/synctest"
	"time"
)

// Regression tests for the second concurrency review.

// A flush that gave up at FlushTimeout while its bulk call went on had its
// slice reused for the next batch, into which the abandoned call then wrote.
// Here the late write happens during the next flush, after the first
// request is out (so that it is ordered after the engine's last read).
func TestRegressTimedOutFlushSliceNotReused(t *testing.T) {
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
		rgSubmit(t, g, context.Background(), 1)
		if r := <-g.Out(); !errors.Is(r.Err, context.DeadlineExceeded) {
			t.Fatalf("first request: %v, want the flush's deadline", r.Err)
		}
		rgSubmit(t, g, context.Background(), 7)
		synctest.Wait() // the second flush runs
		close(release)
		if r := <-g.Out(); r.Data != 70 || r.Err != nil {
			t.Errorf("second request: %d, %v; want 70: its batch shared a slice with the abandoned call", r.Data, r.Err)
		}
		g.Close()
		p.Close()
	})
}

type rg2Panics struct{}

func (rg2Panics) Start(r Request[int]) Request[int] { panic("boom") }
func (rg2Panics) Close()                            {}

// A request that came out after its stage panicked still named its worker
// and stage call, so Add, called outside any stage (a consumer retrying
// it), took it: it came out twice and the count went wrong.
func TestRegressAddAfterPanicIsNotRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBatcher(func(context.Context, []Request[int]) error { return nil })
		p := rgNew(t, rg2Panics{}, WithWorkers(1))
		g := p.NewGroup()
		rgSubmit(t, g, context.Background(), 1)
		r := <-g.Out()
		synctest.Wait() // the worker is idle again
		r.Err = nil
		if got := b.Add(r); got.Err != ErrNotRunning {
			t.Errorf("Add outside a stage: %v, want ErrNotRunning", got.Err)
		}
		g.Close()
		p.Close()
		if s := p.Stats(); s.Submitted != 1 || s.Failed != 1 || s.InFlight != 0 {
			t.Errorf("stats %+v", s)
		}
	})
}

// runtime.Goexit in a flush (t.FailNow in a test's flush, say) lost the
// batch: its requests never came out, the batcher never flushed again and
// Close hung.
func TestRegressGoexitInFlush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &finalBatch{}
		calls := 0
		m.bulk = NewBatcher(func(context.Context, []Request[int]) error {
			if calls++; calls == 1 {
				runtime.Goexit()
			}
			return nil
		})
		p := rgNew(t, m, WithWorkers(1))
		g := p.NewGroup()
		rgSubmit(t, g, context.Background(), 1)
		var pe *PanicError
		if r := <-g.Out(); !errors.As(r.Err, &pe) || !errors.Is(r.Err, errGoexit) {
			t.Errorf("request of the batch whose flush called Goexit: %v, want a *PanicError of errGoexit", r.Err)
		}
		rgSubmit(t, g, context.Background(), 2)
		if r := <-g.Out(); r.Err != nil {
			t.Errorf("the next batch: %v", r.Err)
		}
		g.Close()
		p.Close() // the bubble fails the test if this hangs
	})
}
