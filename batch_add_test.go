package statepipe

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Batcher.Add takes the request of the running stage call, once: any
// other request (outside a stage, a second Add, a stale copy) is refused,
// and a request it took waits for its flush.

func TestBatchAddOutsidePipeline(t *testing.T) {
	base := batcherGoroutines()
	b := NewBatcher(func(context.Context, []Request[int]) error {
		t.Error("flush called")
		return nil
	})
	r := b.Add(Request[int]{Ctx: bg, Data: 7})
	if !errors.Is(r.Err, ErrNotRunning) || r.Data != 7 {
		t.Errorf("Add outside a pipeline: Err=%v Data=%d, want ErrNotRunning and the data back", r.Err, r.Data)
	}
	if st := b.Stats(); st.Parked != 0 || st.TotalFlushes() != 0 {
		t.Errorf("stats %+v: nothing parked", st)
	}
	if n := batcherGoroutines() - base; n != 0 {
		t.Errorf("%d Batcher goroutines started by a failed Add", n)
	}
}

type alwaysPanics struct{}

func (alwaysPanics) Start(r Request[int]) Request[int] { panic("boom") }
func (alwaysPanics) Close()                            {}

// A request that came out after its stage panicked still named its worker
// and stage call, so Add, called outside any stage (a consumer retrying
// it), took it: it came out twice and the count went wrong.
func TestAddOfARequestOutOfAPanicIsRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBatcher(func(context.Context, []Request[int]) error { return nil })
		p := mustNew[int](t, alwaysPanics{}, WithWorkers(1))
		g := p.NewGroup()
		mustSubmit(t, g, context.Background(), 1)
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

// Add called twice in one stage call parked the request twice: it was
// flushed and delivered twice. The second Add must take nothing and say so.
func TestAddTwiceInOneStageIsRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var flushed atomic.Int64
		b := NewBatcher(func(ctx context.Context, batch []Request[int]) error {
			flushed.Add(int64(len(batch)))
			return markFlush(ctx, batch)
		}, MaxWait(time.Hour))
		var mu sync.Mutex
		var second []error
		m := newHookM(b, func(m *hookM, r Request[int]) Request[int] {
			r.Next = m.after
			m.b.Add(r)
			again := m.b.Add(r)
			mu.Lock()
			second = append(second, again.Err)
			mu.Unlock()
			return again // ignored: the first Add took the request
		})
		p := mustNew[int](t, m, WithWorkers(2))
		fourFlushedThenAfter(t, p)
		if n := flushed.Load(); n != 4 {
			t.Errorf("flush saw %d elements for 4 requests", n)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(second) != 4 {
			t.Fatalf("Start ran %d times, want 4", len(second))
		}
		for _, err := range second {
			if !errors.Is(err, ErrNotRunning) {
				t.Errorf("second Add in one stage call: Err %v, want ErrNotRunning", err)
			}
		}
	})
}

// A stage doing b.Add(r); return r (the result of Add dropped) went on to
// After at once and came out, and the flush delivered it a second time.
// The request must wait for its flush and come out once.
func TestAddThenReturningTheOriginalWaitsForTheFlush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		b := NewBatcher(func(ctx context.Context, batch []Request[int]) error {
			<-gate
			return markFlush(ctx, batch)
		}, MaxWait(time.Hour))
		m := newHookM(b, func(m *hookM, r Request[int]) Request[int] {
			r.Next = m.after
			m.b.Add(r)
			return r
		})
		p := mustNew[int](t, m, WithWorkers(2))
		g := p.NewGroup()
		mustSubmit(t, g, context.Background(), 7)
		synctest.Wait() // parked; the flush waits for gate
		if n := len(g.Out()); n != 0 || m.afterRuns.Load() != 0 {
			t.Errorf("before its flush ended: %d results out, After ran %d times; want none", n, m.afterRuns.Load())
		}
		close(gate)
		g.Close()
		r := exactlyOnce(t, drainWithin(t, g, 1000*time.Hour), 7)[7]
		if r.Err != nil || r.Data != 7+1100 {
			t.Errorf("Data %d, Err %v; want %d, nil (flushed, then After)", r.Data, r.Err, 7+1100)
		}
		if n := m.afterRuns.Load(); n != 1 {
			t.Errorf("After ran %d times, want once", n)
		}
		p.Close()
	})
}
