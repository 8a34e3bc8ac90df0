package statepipe

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// Close: where it must not be called from, what it flushes at shutdown,
// and what it waits for before it returns.

// closer calls Close of its own Pipelines from where it must not: a stage,
// a flush, or an observer called on a worker. Close waits for every
// request to finish, so from there it used to wait for itself, for ever.
type closer struct {
	p    **Pipelines[int]
	errs chan error
	bulk *Batcher[int]
	next Stage[int]
}

func (c *closer) Start(r Request[int]) Request[int] {
	switch r.Data {
	case 0:
		c.errs <- (*c.p).Close()
	case 1:
		r.Next = c.next
		return c.bulk.Add(r)
	}
	return r
}

func (c *closer) After(r Request[int]) Request[int] { return r }
func (c *closer) Close()                            {}

func TestCloseFromTheEngineIsRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var p *Pipelines[int]
		c := &closer{p: &p, errs: make(chan error, 3)}
		c.next = c.After
		c.bulk = NewBatcher(func(context.Context, []Request[int]) error {
			c.errs <- p.Close()
			return nil
		})
		obs := ObserverFunc(func(e Event) {
			if e.Kind == StageDone && e.Stage == "After" {
				c.errs <- p.Close()
			}
		})
		p = mustNew[int](t, c, WithWorkers(2), WithObserver(obs))
		for _, v := range []int{0, 1} { // a stage; a flush, then an observer on a worker
			if r := p.Do(context.Background(), v); r[0].Err != nil {
				t.Errorf("request %d: %v", v, r[0].Err)
			}
		}
		for _, where := range []string{"a stage", "a flush", "an observer"} {
			if err := <-c.errs; !errors.Is(err, ErrCloseInStage) {
				t.Errorf("Close from %s = %v, want ErrCloseInStage", where, err)
			}
		}
		if err := p.Close(); err != nil { // from outside, it closes
			t.Errorf("Close = %v", err)
		}
		if err := p.Close(); err != nil {
			t.Errorf("second Close = %v", err)
		}
		if res := p.Do(context.Background(), 2); !errors.Is(res[0].Err, ErrClosed) {
			t.Errorf("Do after Close: %v, want ErrClosed", res[0].Err)
		}
	})
}

// parkOnly parks every request in bulk, which flushes only at Close.
type parkOnly struct{ bulk *Batcher[int] }

func (m *parkOnly) Start(r Request[int]) Request[int] { return m.bulk.Add(r) }
func (m *parkOnly) Close()                            {}

// The Resumed event of a member whose context ends while parked is
// observed on the context's goroutine, not one the engine started; Close
// from there waited for the drain, which waited for that very member: a
// hang (found by review). It is refused like any Close from the engine.
func TestCloseFromAnObserverOfACancelledMemberIsRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &parkOnly{bulk: NewBatcher(func(context.Context, []Request[int]) error { return nil },
			MaxWait(time.Hour), NoIdleFlush())}
		var p *Pipelines[int]
		closeErr := make(chan error, 1)
		obs := ObserverFunc(func(e Event) {
			if e.Kind == Resumed && e.Err != nil {
				closeErr <- p.Close()
			}
		})
		p = mustNew[int](t, m, WithWorkers(2), WithObserver(obs))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan []Request[int])
		go func() { done <- p.Do(ctx, 1) }()
		synctest.Wait() // parked
		cancel()
		if err := <-closeErr; !errors.Is(err, ErrCloseInStage) {
			t.Errorf("Close from the observer = %v, want ErrCloseInStage", err)
		}
		if r := <-done; !errors.Is(r[0].Err, context.Canceled) {
			t.Errorf("the member: %v, want context.Canceled", r[0].Err)
		}
		p.Close()
	})
}

func TestBatchShutdownFlushesPending(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rg := newBatchRig(t, []BatchOption{MaxWait(time.Hour)})
		g := rg.p.NewGroup()
		col := collectAsync(g, rg.log.t0)
		rg.sleeper(time.Minute) // Close must wait for it
		for i := range 5 {
			rg.submit(g, bg, batchItem{N: i, Val: i})
		}
		synctest.Wait()
		if n := len(rg.log.snapshot()); n != 0 {
			t.Fatalf("%d flushes before Close", n)
		}
		rg.p.Close()
		if d := rg.since(); d != time.Minute {
			t.Errorf("Close returned after %v, want 1m (the sleeper)", d)
		}
		got := col.wait()
		checkOnceInGroup(t, 0, itemIDs(0, 5), requestsOf(got))
		for _, s := range got {
			checkFlushedThenAfter(t, s.r)
			if s.at != 0 {
				t.Errorf("request %d out at %v: Close must flush the pending batch at once", s.r.Data.N, s.at)
			}
		}
		if st := rg.m.bulk.Stats(); st.Flushes[FlushShutdown] != 1 || st.TotalFlushes() != 1 {
			t.Errorf("stats %+v: want one shutdown flush", st)
		}
	})
}

// TestBatchParkDuringShutdown: a request that parks after Close began, in
// a batcher bound before, does not wait for MaxWait; it flushes once
// nothing else runs, counted as a shutdown flush.
func TestBatchParkDuringShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rg := newBatchRig(t, []BatchOption{MaxItems(2), MaxWait(time.Hour)})
		g := rg.p.NewGroup()
		col := collectAsync(g, rg.log.t0)
		rg.sleeper(time.Minute)
		rg.submit(g, bg, batchItem{N: 0})
		rg.submit(g, bg, batchItem{N: 1, Val: 1}) // a size flush: the batcher is bound
		rg.submit(g, bg, batchItem{N: 2, Val: 2, Sleep: 30 * time.Second})
		synctest.Wait()
		rg.p.Close()
		got := col.wait()
		checkOnceInGroup(t, 0, itemIDs(0, 3), requestsOf(got))
		for _, s := range got {
			checkFlushedThenAfter(t, s.r)
			if s.r.Data.N == 2 && s.at > time.Minute {
				t.Errorf("request parked during shutdown out at %v, want by 1m when the engine idles", s.at)
			}
		}
		st := rg.m.bulk.Stats()
		if st.Flushes[FlushSize] != 1 || st.Flushes[FlushShutdown] != 1 || st.TotalFlushes() != 2 {
			t.Errorf("stats %+v: want a size flush and a shutdown flush", st)
		}
	})
}

// TestBatchFirstAddDuringShutdown: a batcher whose first request arrives
// after Close began must still be flushed as shutdown and stopped by Close.
func TestBatchFirstAddDuringShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := batcherGoroutines()
		rg := newBatchRig(t, []BatchOption{MaxWait(time.Hour)})
		g := rg.p.NewGroup()
		col := collectAsync(g, rg.log.t0)
		rg.submit(g, bg, batchItem{N: 0, Sleep: time.Millisecond}) // adds at 1ms
		synctest.Wait()
		rg.p.Close() // at 0: the batcher is not bound yet
		got := col.wait()
		checkOnceInGroup(t, 0, itemIDs(0, 1), requestsOf(got))
		// Regression: Close once read the parkers only before the requests
		// still running reached the batcher, so a batcher bound after that
		// was never told engineClosing (its flush counted as idle) nor
		// engineClosed (its dispatcher goroutine outlived Close).
		if st := rg.m.bulk.Stats(); st.Flushes[FlushShutdown] != 1 {
			t.Errorf("stats %+v: the flush during Close must count as shutdown", st)
		}
		synctest.Wait()
		if n := batcherGoroutines() - base; n != 0 {
			t.Errorf("%d Batcher goroutine(s) still running after Pipelines.Close", n)
			rg.m.bulk.engineClosed() // so that the bubble can end; the test has failed
		}
	})
}

// A Batcher first used after Close had begun was never told of the
// shutdown: its request lingered for MaxWait and its goroutine outlived
// Close.
func TestBatcherFirstUsedDuringCloseFlushesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		b := NewBatcher(markFlush, MaxWait(time.Hour))
		m := newHookM(b, func(m *hookM, r Request[int]) Request[int] {
			<-gate
			return parkThenAfter(m, r) // the batcher's first Add ever
		})
		p := mustNew[int](t, m, WithWorkers(2))
		g := p.NewGroup()
		mustSubmit(t, g, context.Background(), 1)
		synctest.Wait()
		start := time.Now()
		closed := make(chan struct{})
		go func() { p.Close(); close(closed) }()
		synctest.Wait() // Close waits for the request
		close(gate)
		select {
		case <-closed:
		case <-time.After(time.Minute):
			t.Errorf("Close still waiting a minute later: the late batch lingers (MaxWait is an hour)")
			<-closed
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("Close took %v of fake time", d)
		}
		if n := goroutinesIn("(*Batcher[...]).lingers(") + goroutinesIn("(*Batcher[...]).runner("); n != 0 {
			t.Errorf("%d batcher goroutines outlive Close", n)
		}
		r := exactlyOnce(t, drainWithin(t, g, 1000*time.Hour), 1)[1]
		if r.Err != nil || r.Data != 1+1100 {
			t.Errorf("Data %d, Err %v; want %d, nil", r.Data, r.Err, 1+1100)
		}
		if s := b.Stats(); s.Flushes[FlushShutdown] != 1 {
			t.Errorf("flushes by reason %v, want one at shutdown", s.Flushes)
		}
	})
}

// noIdleParker is a parker that ignores the engine's idle calls and the
// start of Close: its batches wait for their deadline.
type noIdleParker struct{ parker }

func (noIdleParker) engineIdle()    {}
func (noIdleParker) engineClosing() {}

// closeWaitsInEngineClosed reports whether Close is blocked in a
// batcher's engineClosed after the batcher's linger goroutine has gone: it
// is waiting for something else the batcher started.
func closeWaitsInEngineClosed() bool {
	waiting := false
	for _, s := range goroutineStacks() {
		if strings.Contains(s, "(*Batcher[...]).lingers(") {
			return false
		}
		header, _, _ := strings.Cut(s, "\n")
		if strings.Contains(s, "(*Batcher[...]).engineClosed(") && strings.Contains(header, "WaitGroup") {
			waiting = true
		}
	}
	return waiting
}

// The goroutine that context.AfterFunc starts for a parked request whose
// context ends was not joined: it could lose the race to the flush, still
// be waiting for the batcher's lock, and run after Close had returned.
// The test holds the lock itself and plays the dispatcher's step (close the
// batch, take its members), so the watcher is certain to be waiting.
func TestCloseWaitsForContextWatchers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gateA, gateR := make(chan struct{}), make(chan struct{})
		b := NewBatcher(markFlush, MaxWait(time.Hour))
		m := newHookM(b, func(m *hookM, r Request[int]) Request[int] {
			switch r.Data {
			case 1:
				<-gateA // keeps the engine busy, so batches linger
				return r
			case 2:
				<-gateR // parks once Close has begun
			}
			return parkThenAfter(m, r)
		})
		p := mustNew[int](t, m, WithWorkers(2))
		g := p.NewGroup()
		mustSubmit(t, g, context.Background(), 0) // binds the batcher
		if r := <-g.Out(); r.Data != 1100 || r.Err != nil {
			t.Fatalf("warm-up: Data %d, Err %v", r.Data, r.Err)
		}
		// From here on the batcher is not told that the workers are idle
		// or that Close begins: both take b.mu, which the test holds while
		// the requests finish.
		p.mu.Lock()
		p.parkers.Store(&[]parker{noIdleParker{b}})
		p.mu.Unlock()
		mustSubmit(t, g, context.Background(), 1)
		ctxR, cancelR := context.WithCancel(context.Background())
		defer cancelR()
		mustSubmit(t, g, ctxR, 2)
		synctest.Wait()
		closed := make(chan struct{})
		go func() { p.Close(); close(closed) }()
		synctest.Wait() // Close waits for requests 1 and 2
		close(gateR)
		synctest.Wait() // 2 lingers in a batch; the linger goroutine sleeps

		b.mu.Lock()
		if b.pending.Len() != 1 {
			b.mu.Unlock()
			t.Fatalf("%d lingering batches, want 1", b.pending.Len())
		}
		cancelR() // its watcher starts and waits for b.mu
		bt, _ := b.pending.Pop()
		bt.closed = true
		b.index.del(bt)
		kept, cancelled := b.take(bt, nil)
		if len(kept) != 0 || len(cancelled) != 1 {
			t.Errorf("take kept %d members and failed %d; want 0 and the 1 whose watcher had fired", len(kept), len(cancelled))
		}
		for _, m := range cancelled { // as a runner does once b.mu is released
			b.p.resume(m.rec)
		}
		close(gateA)
		// Every request can now come out. Close must then wait for the
		// watcher, which needs b.mu.
		returned := false
		for i := 0; ; i++ {
			select {
			case <-closed:
				returned = true
			default:
			}
			if returned || closeWaitsInEngineClosed() {
				break
			}
			if i == 10_000 { // a few are enough; each looks at every stack
				stacks := strings.Join(goroutineStacks(), "\n\n")
				b.mu.Unlock()
				t.Fatalf("Close neither returned nor waited for the watcher:\n%s", stacks)
			}
			runtime.Gosched()
		}
		if returned {
			t.Errorf("Close returned while the watcher of a cancelled request was still running (%d goroutines in Batcher.cancel)",
				goroutinesIn("(*Batcher[...]).cancel("))
		}
		b.mu.Unlock()
		<-closed
		if n := goroutinesIn("(*Batcher[...]).cancel("); n != 0 {
			t.Errorf("%d watcher goroutines outlive Close", n)
		}
		got := exactlyOnce(t, drainWithin(t, g, 1000*time.Hour), 1, 2)
		if r := got[2]; !errors.Is(r.Err, context.Canceled) {
			t.Errorf("cancelled parked request: Err %v, want context.Canceled", r.Err)
		}
	})
}
