package statepipe

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestBatchStress mixes groups (two ordered), two batchers in sequence
// (one keyed, one with a byte budget), panics and errors in stages and
// flushes, random cancellations and a small in-flight bound. Every
// accepted request comes out exactly once, in its own group, in order for
// the ordered groups, and with a result consistent with what happened.
func TestBatchStress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			groups   = 4
			perGroup = 250
			bound    = 64
		)
		log1, log2 := newBatchLog(), newBatchLog()
		log2.field = func(d *batchItem) *int { return &d.Flush2 }
		log1.hook = func(_ context.Context, b []Request[batchItem]) error {
			time.Sleep(time.Duration(len(b)) * 50 * time.Microsecond)
			var err error
			for i := range b {
				switch b[i].Data.Fault {
				case faultOwnErr:
					b[i].Err = errBatchOwn
				case faultFlushPanic:
					panic("flush boom")
				case faultFlushErr:
					err = errBatchBulk
				}
			}
			return err
		}
		log2.hook = func(_ context.Context, b []Request[batchItem]) error {
			time.Sleep(300 * time.Microsecond)
			for i := range b {
				if b[i].Data.Fault == faultFlush2 {
					panic("second boom")
				}
			}
			return nil
		}
		m := newBatchM(NewBatcher(log1.flush, MaxItems(8), MaxWait(2*time.Millisecond), MaxFlushes(2),
			BatchKey(func(d batchItem) int { return d.Key })))
		m.bulk2 = NewBatcher(log2.flush, MaxItems(5), MaxWait(time.Millisecond),
			MaxBytes(40, func(d batchItem) int { return d.Size }), BatchName("second"))
		p, err := New[batchItem](m, WithPipelines(2), WithMaxInFlight(bound))
		if err != nil {
			t.Fatal(err)
		}
		var maxInFlight atomic.Int64
		var (
			mu       sync.Mutex
			accepted = make([][]itemID, groups)
			cancels  []context.CancelFunc
		)
		var wg sync.WaitGroup
		results := make([][]Request[batchItem], groups)
		for gi := range groups {
			var opts []GroupOption
			if gi >= 2 {
				opts = append(opts, Ordered())
			}
			if gi == 3 {
				opts = append(opts, MaxInFlight(16))
			}
			g := p.NewGroup(opts...)
			wg.Add(2)
			go func() { // consumer
				defer wg.Done()
				for r := range g.Out() {
					results[gi] = append(results[gi], r)
					if n := int64(p.Stats().InFlight); n > maxInFlight.Load() {
						maxInFlight.Store(n)
					}
				}
			}()
			go func() { // producer
				defer wg.Done()
				defer g.Close()
				rng := rand.New(rand.NewPCG(uint64(gi), 7))
				for i := range perGroup {
					d := batchItem{G: gi, N: i, Val: i, Key: rng.IntN(3), Size: 1 + rng.IntN(20)}
					if rng.IntN(10) == 0 {
						d.Fault = 1 + rng.IntN(numFaults-1)
					}
					if rng.IntN(20) == 0 {
						d.Sleep = time.Duration(rng.IntN(2000)) * time.Microsecond
					}
					ctx := bg
					switch rng.IntN(20) {
					case 0, 1:
						c, cancel := context.WithTimeout(bg, time.Duration(rng.IntN(3000))*time.Microsecond)
						ctx = c
						mu.Lock()
						cancels = append(cancels, cancel)
						mu.Unlock()
					case 2:
						c, cancel := context.WithCancel(bg)
						ctx = c
						mu.Lock()
						cancels = append(cancels, cancel)
						mu.Unlock()
						delay := time.Duration(rng.IntN(2000)) * time.Microsecond
						go func() { time.Sleep(delay); cancel() }()
					}
					if err := g.Submit(ctx, d); err != nil {
						if ctx.Err() == nil {
							t.Errorf("Submit: %v", err)
						}
						continue
					}
					mu.Lock()
					accepted[gi] = append(accepted[gi], d.id())
					mu.Unlock()
					if rng.IntN(2) == 0 {
						time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
					}
				}
			}()
		}
		wg.Wait()
		p.Close()
		for _, c := range cancels {
			c()
		}

		total := 0
		for gi := range groups {
			checkOnceInGroup(t, gi, accepted[gi], results[gi])
			total += len(results[gi])
			last := -1
			for _, r := range results[gi] {
				d := r.Data
				if gi >= 2 {
					if d.N <= last {
						t.Errorf("ordered group %d: %d after %d", gi, d.N, last)
					}
					last = d.N
				}
				if r.Err == nil {
					if d.Fault != faultNone || d.Val != 100*d.N || d.After != 1 || d.Alt != 1 || d.Flush == 0 || d.Flush2 == 0 {
						t.Errorf("request %v succeeded with %+v", d.id(), d)
					}
					continue
				}
				var pe *PanicError
				switch {
				case errors.Is(r.Err, context.Canceled), errors.Is(r.Err, context.DeadlineExceeded),
					errors.Is(r.Err, errBatchStage), errors.Is(r.Err, errBatchOwn), errors.Is(r.Err, errBatchBulk):
				case errors.As(r.Err, &pe):
					switch pe.Stage {
					case "Start", "After", "batch flush", "second flush":
					default:
						t.Errorf("request %v: panic in unexpected stage %q", d.id(), pe.Stage)
					}
				default:
					t.Errorf("request %v: unexpected error %v", d.id(), r.Err)
				}
			}
		}
		if total < groups*perGroup*8/10 {
			t.Errorf("only %d of %d requests accepted", total, groups*perGroup)
		}
		if n := maxInFlight.Load(); n > bound {
			t.Errorf("InFlight reached %d, bound %d", n, bound)
		}
		for i, c := range log1.snapshot() {
			if len(c.Items) > 8 {
				t.Errorf("first batcher flush %d: %d items", i+1, len(c.Items))
			}
			for _, d := range c.Items {
				if d.Key != c.Items[0].Key {
					t.Errorf("first batcher flush %d mixes keys", i+1)
					break
				}
			}
		}
		for i, c := range log2.snapshot() {
			if len(c.Items) > 5 {
				t.Errorf("second batcher flush %d: %d items", i+1, len(c.Items))
			}
		}
		if log1.maxConcurrent() > 2 || log2.maxConcurrent() > 1 {
			t.Errorf("concurrent flushes %d and %d, MaxFlushes 2 and 1", log1.maxConcurrent(), log2.maxConcurrent())
		}
		for _, b := range []*Batcher[batchItem]{m.bulk, m.bulk2} {
			if st := b.Stats(); st.Parked != 0 {
				t.Errorf("%s: %d still parked after Close", st.Name, st.Parked)
			}
		}
		t.Logf("%d out; %s: %+v; %s: %+v", total, m.bulk.Stats().Name, m.bulk.Stats().Flushes, m.bulk2.Stats().Name, m.bulk2.Stats().Flushes)
	})
}
