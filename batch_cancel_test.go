package statepipe

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Cancellation of batched requests: a member whose context ends while it
// lingers in a batch, waits for a flush slot or is being flushed.

// TestBatchKeyLingerAfterCancel: each key's linger is its own, also when
// another key's batch was emptied by a cancellation and then reused.
func TestBatchKeyLingerAfterCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const wait = 10 * time.Millisecond
		rg := newBatchRig(t, []BatchOption{MaxWait(wait), BatchKey(func(d batchItem) int { return d.Key })})
		g := rg.p.NewGroup()
		col := collectAsync(g, rg.log.t0)
		rg.sleeper(time.Hour)
		ctx, cancel := context.WithCancel(bg)
		rg.submit(g, ctx, batchItem{N: 0, Key: 1}) // key 1 at 0
		time.Sleep(2 * time.Millisecond)
		rg.submit(g, bg, batchItem{N: 1, Key: 2}) // key 2 at 2ms: due at 12ms
		time.Sleep(time.Millisecond)
		cancel() // key 1's batch is empty at 3ms
		time.Sleep(2 * time.Millisecond)
		rg.submit(g, bg, batchItem{N: 2, Key: 1}) // key 1 again at 5ms: due at 15ms
		time.Sleep(time.Hour)
		calls := rg.log.snapshot()
		// Regression: cancel once left an emptied open batch in the index
		// and in lingers; key 1's batch, reused at 5ms, was then in lingers
		// twice, ahead of key 2's, and lingerDue, which stops at the first
		// batch not yet due, made key 2 wait for key 1 (15ms).
		if len(calls) != 2 || calls[0].At != 2*time.Millisecond+wait || calls[0].Items[0].Key != 2 ||
			calls[1].At != 5*time.Millisecond+wait || calls[1].Items[0].Key != 1 {
			t.Errorf("want key 2 flushed at 12ms and key 1 at 15ms:%s", describeFlushes(calls))
		}
		g.Close()
		rg.p.Close()
		got := col.wait()
		checkOnceInGroup(t, 0, itemIDs(0, 3), requestsOf(got))
	})
}

// In a keyed batcher, a batch emptied by cancellation kept its key and its
// old place in the linger queue; refilled, it was queued again behind
// later keys, and the next key's batch waited past its MaxWait.
func TestCancelledKeyedBatchDoesNotDelayTheNextKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		b := NewBatcher(markFlush, MaxWait(10*time.Millisecond), BatchKey(func(d int) int { return d / 10 }))
		m := newHookM(b, func(m *hookM, r Request[int]) Request[int] {
			if r.Data < 0 {
				<-gate // keeps the engine busy: no idle flush
				return r
			}
			return parkThenAfter(m, r)
		})
		p := mustNew[int](t, m, WithWorkers(2))
		g := p.NewGroup()
		start := time.Now()
		mustSubmit(t, g, context.Background(), -1)
		synctest.Wait() // busy before anything parks: no idle flush from here on
		ctxA, cancelA := context.WithCancel(context.Background())
		defer cancelA()
		mustSubmit(t, g, ctxA, 10) // key 1 at 0ms
		time.Sleep(time.Millisecond)
		mustSubmit(t, g, context.Background(), 20) // key 2 at 1ms: due at 11ms
		time.Sleep(time.Millisecond)
		cancelA() // key 1 empty at 2ms
		time.Sleep(3 * time.Millisecond)
		mustSubmit(t, g, context.Background(), 11) // key 1 again at 5ms: due at 15ms
		for range 3 {
			r := <-g.Out()
			switch r.Data % 100 {
			case 10:
				if !errors.Is(r.Err, context.Canceled) {
					t.Errorf("request 10: Err %v, want context.Canceled", r.Err)
				}
			case 20:
				if d := time.Since(start); d != 11*time.Millisecond {
					t.Errorf("key 2 flushed at %v, want at its MaxWait, 11ms", d)
				}
			}
		}
		close(gate)
		g.Close()
		exactlyOnce(t, drainWithin(t, g, 1000*time.Hour), -1)
		p.Close()
	})
}

func TestBatchCancelParked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rg := newBatchRig(t, []BatchOption{MaxWait(time.Hour)})
		g := rg.p.NewGroup()
		col := collectAsync(g, rg.log.t0)
		rg.sleeper(time.Minute)
		ctx, cancel := context.WithCancel(bg)
		tctx, tcancel := context.WithTimeout(bg, 7*time.Millisecond)
		defer tcancel()
		rg.submit(g, bg, batchItem{N: 0, Val: 0})
		rg.submit(g, ctx, batchItem{N: 1, Val: 1})
		rg.submit(g, bg, batchItem{N: 2, Val: 2})
		rg.submit(g, tctx, batchItem{N: 3, Val: 3})
		synctest.Wait()
		if st := rg.m.bulk.Stats(); st.Parked != 4 {
			t.Fatalf("stats %+v: want 4 parked", st)
		}
		time.Sleep(5 * time.Millisecond)
		cancel()
		time.Sleep(time.Second)
		out := col.results()
		if len(out) != 2 {
			t.Fatalf("%d out before the flush, want the 2 cancelled ones", len(out))
		}
		wantAt := map[int]time.Duration{1: 5 * time.Millisecond, 3: 7 * time.Millisecond}
		wantErr := map[int]error{1: context.Canceled, 3: context.DeadlineExceeded}
		for _, s := range out {
			n := s.r.Data.N
			if s.at != wantAt[n] || !errors.Is(s.r.Err, wantErr[n]) || s.r.Data.Flush != 0 || s.r.Data.After != 0 {
				t.Errorf("request %d out at %v with %v (flush %d), want at %v with %v, unflushed",
					n, s.at, s.r.Err, s.r.Data.Flush, wantAt[n], wantErr[n])
			}
		}
		if st := rg.m.bulk.Stats(); st.Parked != 2 || st.Cancelled != 2 || st.TotalFlushes() != 0 {
			t.Errorf("stats %+v: want 2 parked, 2 cancelled, no flush yet", st)
		}
		g.Close()
		rg.p.Close() // flushes the rest
		got := col.wait()
		checkOnceInGroup(t, 0, itemIDs(0, 4), requestsOf(got))
		calls := rg.log.snapshot()
		if len(calls) != 1 || len(calls[0].Items) != 2 {
			t.Fatalf("want one flush of the 2 not cancelled:%s", describeFlushes(calls))
		}
		for _, d := range calls[0].Items {
			if d.N%2 == 1 {
				t.Errorf("cancelled request %d was flushed", d.N)
			}
		}
	})
}

// TestBatchCancelQueuedAndRunning: a member of a full batch that waits for
// a flush slot leaves it when cancelled; a member whose flush has started
// stays in it, and comes out once, after the flush.
func TestBatchCancelQueuedAndRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rg := newBatchRig(t, []BatchOption{MaxItems(2), MaxFlushes(1), MaxWait(time.Hour)})
		gate := make(chan struct{})
		rg.log.hook = func(_ context.Context, b []Request[batchItem]) error {
			if b[0].Data.N < 2 {
				<-gate
			}
			return nil
		}
		g := rg.p.NewGroup()
		col := collectAsync(g, rg.log.t0)
		rg.sleeper(time.Hour)
		ctxRun, cancelRun := context.WithCancel(bg)
		ctxQ, cancelQ := context.WithCancel(bg)
		rg.submit(g, ctxRun, batchItem{N: 0})
		rg.submit(g, bg, batchItem{N: 1})
		synctest.Wait() // flush 1 running, blocked
		rg.submit(g, ctxQ, batchItem{N: 2})
		rg.submit(g, bg, batchItem{N: 3})
		synctest.Wait() // batch 2 full, waiting for the slot
		time.Sleep(time.Millisecond)
		cancelQ()
		cancelRun()
		time.Sleep(time.Millisecond)
		out := col.results()
		if len(out) != 1 || out[0].r.Data.N != 2 || !errors.Is(out[0].r.Err, context.Canceled) || out[0].at != time.Millisecond {
			t.Fatalf("want request 2 out at 1ms with context.Canceled, got %d results: %v", len(out), requestsOf(out))
		}
		close(gate)
		time.Sleep(time.Millisecond)
		g.Close()
		got := col.wait()
		checkOnceInGroup(t, 0, itemIDs(0, 4), requestsOf(got))
		for _, s := range got {
			switch s.r.Data.N {
			case 0: // flushed, then cancelled before After
				if !errors.Is(s.r.Err, context.Canceled) || s.r.Data.Flush != 1 || s.r.Data.After != 0 {
					t.Errorf("request 0: Err=%v Flush=%d After=%d, want flushed then context.Canceled", s.r.Err, s.r.Data.Flush, s.r.Data.After)
				}
			case 1, 3:
				if s.r.Err != nil || s.r.Data.After != 1 {
					t.Errorf("request %d: Err=%v", s.r.Data.N, s.r.Err)
				}
			}
		}
		if calls := rg.log.snapshot(); len(calls) != 2 || len(calls[1].Items) != 1 || calls[1].Items[0].N != 3 {
			t.Errorf("want the second flush to hold request 3 only:%s", describeFlushes(calls))
		}
		if st := rg.m.bulk.Stats(); st.Cancelled != 1 || st.Items != 3 {
			t.Errorf("stats %+v: want 1 cancelled, 3 flushed", st)
		}
		rg.p.Close()
	})
}

// TestBatchCancelRacesFlush: cancellations that land at the instant a
// batch is taken for its flush. Whoever wins, every request comes out
// exactly once, and the stats agree with what flush saw.
func TestBatchCancelRacesFlush(t *testing.T) {
	const rounds = 60
	for round := range rounds {
		synctest.Test(t, func(t *testing.T) {
			const k = 6
			wait := 10 * time.Millisecond
			rg := newBatchRig(t, []BatchOption{MaxItems(k), MaxWait(wait), MaxFlushes(2)})
			g := rg.p.NewGroup()
			rg.sleeper(time.Hour)
			var cancels []context.CancelFunc
			for i := range k - 1 {
				// Deadline and linger fire at the same instant.
				ctx, cancel := context.WithTimeout(bg, wait)
				cancels = append(cancels, cancel)
				rg.submit(g, ctx, batchItem{N: i, Val: i})
			}
			time.Sleep(wait)
			// A second batch: filled by its last Add while a goroutine
			// cancels the members.
			var second []context.CancelFunc
			for i := range k - 1 {
				ctx, cancel := context.WithCancel(bg)
				second = append(second, cancel)
				rg.submit(g, ctx, batchItem{N: k + i, Val: k + i})
			}
			synctest.Wait()
			go func() {
				for i, c := range second {
					if (i+round)%2 == 0 {
						c()
					}
				}
			}()
			rg.submit(g, bg, batchItem{N: 2*k - 1, Val: 2*k - 1})
			time.Sleep(time.Second)
			g.Close()
			got := drain(g)
			want := append(itemIDs(0, k-1), itemIDs(0, 2*k)[k:]...)
			checkOnceInGroup(t, 0, want, got)
			flushedBy := map[int]int{}
			for _, c := range rg.log.snapshot() {
				for _, d := range c.Items {
					flushedBy[d.N]++
				}
			}
			unflushed := 0
			for _, r := range got {
				n := r.Data.N
				if flushedBy[n] > 1 {
					t.Errorf("request %d flushed %d times", n, flushedBy[n])
				}
				switch {
				case r.Data.Flush == 0:
					unflushed++
					if flushedBy[n] != 0 || !(errors.Is(r.Err, context.Canceled) || errors.Is(r.Err, context.DeadlineExceeded)) {
						t.Errorf("request %d left its batch with Err=%v (in a flush: %d)", n, r.Err, flushedBy[n])
					}
				case flushedBy[n] != 1:
					t.Errorf("request %d came out flushed, flush saw it %d times", n, flushedBy[n])
				case r.Err == nil:
					checkFlushedThenAfter(t, r)
				}
			}
			st := rg.m.bulk.Stats()
			if st.Cancelled != uint64(unflushed) || st.Items != uint64(len(got)-unflushed) || st.Parked != 0 {
				t.Errorf("stats %+v: want %d cancelled, %d items", st, unflushed, len(got)-unflushed)
			}
			for _, c := range cancels {
				c()
			}
			for _, c := range second {
				c()
			}
			rg.p.Close()
		})
	}
}

// TestBatchCancelAllAtFlush: when every member of a batch is cancelled at
// the instant its linger ends, the members come out with their context
// error and flush must not be called with an empty batch.
func TestBatchCancelAllAtFlush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			wait   = 10 * time.Millisecond
			rounds = 100
		)
		rg := newBatchRig(t, []BatchOption{MaxWait(wait)})
		g := rg.p.NewGroup()
		rg.sleeper(time.Hour)
		for i := range rounds {
			ctx, cancel := context.WithTimeout(bg, wait) // ends with the linger
			rg.submit(g, ctx, batchItem{N: i, Val: i})
			time.Sleep(2 * wait)
			cancel()
		}
		got := drainReady(g)
		checkOnceInGroup(t, 0, itemIDs(0, rounds), got)
		calls := rg.log.snapshot()
		empty := 0
		for _, c := range calls {
			if len(c.Items) == 0 {
				empty++
			}
		}
		st := rg.m.bulk.Stats()
		// Regression: dispatch once checked for an empty batch before take,
		// which drops the members whose watcher has already fired (their
		// context ended at the same instant and cancel waits for b.mu), so
		// flush could run with an empty slice while holding a flush slot.
		if empty > 0 || st.TotalFlushes() != st.Items {
			t.Errorf("%d of %d flush calls had an empty batch; stats %+v", empty, len(calls), st)
		}
		// Members that take leaves to their watcher count as cancelled, and
		// their park time is recorded like cancel's.
		if st.ParkTime.Count != st.Items+st.Cancelled {
			t.Errorf("ParkTime.Count %d, want Items %d + Cancelled %d", st.ParkTime.Count, st.Items, st.Cancelled)
		}
		g.Close()
		rg.p.Close()
	})
}

// A batch whose only member was cancelled while it waited for a flush slot
// stayed queued, empty; the engine's idle check skipped pending batches
// because of it, and the next batch waited for MaxWait (an hour here).
func TestCancelledReadyBatchDoesNotStrandTheNext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		var calls atomic.Int64
		b := NewBatcher(func(ctx context.Context, batch []Request[int]) error {
			if calls.Add(1) == 1 {
				<-gate // holds the only flush slot
			}
			return markFlush(ctx, batch)
		}, MaxWait(time.Hour), MaxFlushes(1), MaxBytes(10, func(d int) int {
			if d >= 50 {
				return 10 // flushes alone, at once
			}
			return 1
		}))
		m := newHookM(b, parkThenAfter)
		p := mustNew[int](t, m, WithWorkers(2))
		g := p.NewGroup()
		start := time.Now()
		mustSubmit(t, g, context.Background(), 60) // its flush holds the slot
		synctest.Wait()
		ctxA, cancelA := context.WithCancel(context.Background())
		defer cancelA()
		mustSubmit(t, g, ctxA, 61) // closed at once, waits for the slot
		synctest.Wait()
		cancelA() // empties the waiting batch
		synctest.Wait()
		if r := <-g.Out(); r.Data != 61 || !errors.Is(r.Err, context.Canceled) {
			t.Errorf("cancelled request: Data %d, Err %v; want 61, context.Canceled", r.Data, r.Err)
		}

		mustSubmit(t, g, context.Background(), 5) // lingers: MaxWait is an hour
		synctest.Wait()
		close(gate) // the slot frees, the engine goes idle: 5 must flush now
		synctest.Wait()
		got := map[int]Request[int]{}
		for len(g.Out()) > 0 {
			r := <-g.Out()
			got[r.Data%100] = r
		}
		if r, ok := got[5]; !ok {
			t.Errorf("request 5 still parked after the engine went idle; it would wait for MaxWait")
		} else if r.Err != nil || r.Data != 5+1100 {
			t.Errorf("request 5: Data %d, Err %v; want %d, nil", r.Data, r.Err, 5+1100)
		}
		if _, ok := got[60]; !ok {
			t.Errorf("request 60 not out after its flush ended")
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("took %v of fake time; nothing here should wait", d)
		}
		g.Close()
		drainWithin(t, g, 1000*time.Hour)
		p.Close()
	})
}
