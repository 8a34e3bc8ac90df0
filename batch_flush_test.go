package statepipe

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// What a flush does to its batch: the results, errors and panics of the
// bulk call, and the stages that run after it.

func TestBatchFlushResults(t *testing.T) {
	errOdd := errors.New("odd member")
	sentinel := errors.New("sentinel panic value")
	type tcase struct {
		name  string
		opts  []BatchOption
		hook  func(m *batchM) func(context.Context, []Request[batchItem]) error
		check func(t *testing.T, r Request[batchItem])
		stats func(t *testing.T, st BatchStats)
	}
	cases := []tcase{{
		name: "member errors",
		hook: func(*batchM) func(context.Context, []Request[batchItem]) error {
			return func(_ context.Context, b []Request[batchItem]) error {
				for i := range b {
					if b[i].Data.N%2 == 1 {
						b[i].Err = errOdd
					}
				}
				return nil
			}
		},
		check: func(t *testing.T, r Request[batchItem]) {
			if r.Data.N%2 == 1 {
				if r.Err != errOdd || r.Data.After != 0 || r.Data.Val != 10*r.Data.N {
					t.Errorf("odd %d: Err=%v After=%d Val=%d, want its own error, no After", r.Data.N, r.Err, r.Data.After, r.Data.Val)
				}
				return
			}
			checkFlushedThenAfter(t, r)
		},
		stats: func(t *testing.T, st BatchStats) {
			if st.Failed != 10 || st.Items != 20 {
				t.Errorf("stats %+v: want 10 failed of 20", st)
			}
		},
	}, {
		name: "returned error",
		hook: func(*batchM) func(context.Context, []Request[batchItem]) error {
			return func(_ context.Context, b []Request[batchItem]) error {
				for i := range b {
					if b[i].Data.N == 3 {
						b[i].Err = errOdd
					}
				}
				return errBatchBulk
			}
		},
		check: func(t *testing.T, r Request[batchItem]) {
			want := errBatchBulk
			if r.Data.N == 3 {
				want = errOdd // its own error is kept
			}
			if r.Err != want || r.Data.After != 0 {
				t.Errorf("request %d: Err=%v After=%d, want %v and no After", r.Data.N, r.Err, r.Data.After, want)
			}
		},
		stats: func(t *testing.T, st BatchStats) {
			if st.Failed != 20 || st.Items != 20 {
				t.Errorf("stats %+v: want 20 failed of 20", st)
			}
		},
	}, {
		name: "panic",
		opts: []BatchOption{BatchName("orders")},
		hook: func(*batchM) func(context.Context, []Request[batchItem]) error {
			return func(_ context.Context, b []Request[batchItem]) error {
				if b[0].Data.N < 10 { // the first batch panics, the second does not
					b[0].Err = errOdd // overridden by the panic
					panic(fmt.Errorf("wrapped: %w", sentinel))
				}
				return nil
			}
		},
		check: func(t *testing.T, r Request[batchItem]) {
			if r.Data.N >= 10 {
				checkFlushedThenAfter(t, r) // the pipelines keep running
				return
			}
			var pe *PanicError
			if !errors.As(r.Err, &pe) || pe.Stage != "orders flush" || len(pe.Stack) == 0 ||
				!errors.Is(r.Err, sentinel) || r.Data.After != 0 {
				t.Errorf("request %d: Err=%#v After=%d, want *PanicError of stage \"orders flush\" wrapping the panic value",
					r.Data.N, r.Err, r.Data.After)
			}
		},
		stats: func(t *testing.T, st BatchStats) {
			if st.Failed != 10 || st.Items != 20 || st.TotalFlushes() != 2 || st.Name != "orders" {
				t.Errorf("stats %+v: want 10 failed of 20 in 2 flushes", st)
			}
		},
	}, {
		name: "routing",
		hook: func(m *batchM) func(context.Context, []Request[batchItem]) error {
			return func(_ context.Context, b []Request[batchItem]) error {
				for i := range b {
					switch b[i].Data.N % 3 {
					case 0:
						b[i].Next = m.alt
					case 1:
						b[i].Next = nil // done with the flush
					}
				}
				return nil
			}
		},
		check: func(t *testing.T, r Request[batchItem]) {
			wantAfter, wantAlt := 0, 0
			switch r.Data.N % 3 {
			case 0:
				wantAlt = 1
			case 2:
				wantAfter = 1
			}
			if r.Err != nil || r.Data.After != wantAfter || r.Data.Alt != wantAlt || r.Data.Val != 10*r.Data.N {
				t.Errorf("request %d: Err=%v After=%d Alt=%d, want nil %d %d", r.Data.N, r.Err, r.Data.After, r.Data.Alt, wantAfter, wantAlt)
			}
		},
	}, {
		name: "fresh literals",
		hook: func(m *batchM) func(context.Context, []Request[batchItem]) error {
			return func(_ context.Context, b []Request[batchItem]) error {
				for i := range b {
					d := b[i].Data
					// A new Request: no Ctx, no bookkeeping.
					b[i] = Request[batchItem]{Data: batchItem{G: d.G, N: d.N, Val: -d.N}, Next: m.alt}
				}
				return nil
			}
		},
		check: func(t *testing.T, r Request[batchItem]) {
			if r.Err != nil || r.Data.Val != -r.Data.N || r.Data.Alt != 1 || r.Data.After != 0 || r.Ctx == nil {
				t.Errorf("request %v: Err=%v Val=%d Alt=%d After=%d Ctx=%v, want the flush's data routed to Alt",
					r.Data.id(), r.Err, r.Data.Val, r.Data.Alt, r.Data.After, r.Ctx)
			}
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rg := newBatchRig(t, append([]BatchOption{MaxItems(10), MaxWait(time.Hour)}, tc.opts...))
				rg.log.hook = tc.hook(rg.m)
				// Two groups, one ordered, share every batch.
				g0, g1 := rg.p.NewGroup(), rg.p.NewGroup(Ordered())
				rg.sleeper(time.Hour)
				for i := range 10 {
					rg.submit(g0, bg, batchItem{G: 0, N: 2 * i, Val: 2 * i})
					rg.submit(g1, bg, batchItem{G: 1, N: 2*i + 1, Val: 2*i + 1})
					synctest.Wait() // adds in this order: N 0..9 are the first batch
				}
				g0.Close()
				g1.Close()
				got0, got1 := drainReady(g0), drainReady(g1)
				var want0, want1 []itemID
				for i := range 10 {
					want0 = append(want0, itemID{0, 2 * i})
					want1 = append(want1, itemID{1, 2*i + 1})
				}
				checkOnceInGroup(t, 0, want0, got0)
				checkOnceInGroup(t, 1, want1, got1)
				for i, r := range got1 {
					if r.Data.N != 2*i+1 {
						t.Errorf("ordered group: result %d is request %d", i, r.Data.N)
					}
				}
				for _, r := range append(got0, got1...) {
					tc.check(t, r)
				}
				if tc.stats != nil {
					tc.stats(t, rg.m.bulk.Stats())
				}
				rg.p.Close()
			})
		})
	}
}

// runtime.Goexit in a flush (t.FailNow in a test's flush, say) lost the
// batch: its requests never came out, the batcher never flushed again and
// Close hung.
func TestGoexitInFlushFailsOnlyItsBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &finalBatch{}
		calls := 0
		m.bulk = NewBatcher(func(context.Context, []Request[int]) error {
			if calls++; calls == 1 {
				runtime.Goexit()
			}
			return nil
		})
		p := mustNew[int](t, m, WithWorkers(1))
		g := p.NewGroup()
		mustSubmit(t, g, context.Background(), 1)
		var pe *PanicError
		if r := <-g.Out(); !errors.As(r.Err, &pe) || !errors.Is(r.Err, errGoexit) {
			t.Errorf("request of the batch whose flush called Goexit: %v, want a *PanicError of errGoexit", r.Err)
		}
		mustSubmit(t, g, context.Background(), 2)
		if r := <-g.Out(); r.Err != nil {
			t.Errorf("the next batch: %v", r.Err)
		}
		g.Close()
		p.Close() // the bubble fails the test if this hangs
	})
}

// TestBatchWorkAfterFlush: the stage after a bulk call runs on the
// workers, and counts as a stage of the machine.
func TestBatchWorkAfterFlush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rg := newBatchRig(t, []BatchOption{MaxItems(8)})
		g := rg.p.NewGroup()
		for i := range 64 {
			rg.submit(g, bg, batchItem{N: i, Val: i})
		}
		g.Close()
		got := drain(g)
		checkOnceInGroup(t, 0, itemIDs(0, 64), got)
		for _, r := range got {
			checkFlushedThenAfter(t, r)
		}
		rg.p.Close()
		for _, s := range rg.p.Stats().Stages {
			if s.Name == "After" && s.Runs != 64 {
				t.Errorf("After ran %d times, want 64", s.Runs)
			}
		}
	})
}

func TestBatchTwoBatchers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := batcherGoroutines()
		log1, log2 := newBatchLog(), newBatchLog()
		log2.field = func(d *batchItem) *int { return &d.Flush2 }
		m := newBatchM(NewBatcher(log1.flush, MaxItems(5), MaxWait(time.Hour)))
		m.bulk2 = NewBatcher(log2.flush, MaxItems(7), MaxWait(time.Hour), BatchName("second"))
		p, err := New[batchItem](m, WithPipelines(2))
		if err != nil {
			t.Fatal(err)
		}
		rg := &batchRig{t: t, log: log1, m: m, p: p}
		g := p.NewGroup()
		rg.sleeper(time.Hour)
		for i := range 35 {
			rg.submit(g, bg, batchItem{N: i, Val: i})
		}
		synctest.Wait()
		if s1, s2 := log1.sizes(), log2.sizes(); !slices.Equal(s1, []int{5, 5, 5, 5, 5, 5, 5}) || !slices.Equal(s2, []int{7, 7, 7, 7, 7}) {
			t.Errorf("flush sizes %v and %v, want 7x5 then 5x7", s1, s2)
		}
		got := drainReady(g)
		checkOnceInGroup(t, 0, itemIDs(0, 35), got)
		for _, r := range got {
			d := r.Data
			if r.Err != nil || d.Val != 100*d.N || d.Flush == 0 || d.Flush2 == 0 || d.After != 1 || d.Alt != 1 {
				t.Errorf("request %d: %+v Err=%v, want through both batchers", d.N, d, r.Err)
			}
		}
		if s := m.bulk2.Stats(); s.Name != "second" || s.Items != 35 || s.Flushes[FlushSize] != 5 {
			t.Errorf("second batcher stats %+v", s)
		}
		g.Close()
		p.Close()
		synctest.Wait()
		if n := batcherGoroutines() - base; n != 0 {
			t.Errorf("%d Batcher goroutines left after Close", n)
		}
	})
}
