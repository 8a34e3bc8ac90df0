package statepipe

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// The tests below run inside testing/synctest bubbles: time is fake and
// starts at the rig's t0, so timings are exact, and synctest.Test fails if
// a goroutine of the library is left behind after Close. Most tests keep
// the engine busy with a sleeper (a request asleep in a stage of its own
// group) so that the idle trigger cannot fire and each trigger under test
// is the only one that can.

func TestBatchFlushOnSize(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rg := newBatchRig(t, []BatchOption{MaxItems(10), MaxWait(time.Hour)})
		g := rg.p.NewGroup()
		rg.sleeper(time.Hour)
		for i := range 100 {
			rg.submit(g, bg, batchItem{N: i, Val: i})
		}
		synctest.Wait()

		calls := rg.log.snapshot()
		if len(calls) != 10 {
			t.Fatalf("%d flushes, want 10:%s", len(calls), describeFlushes(calls))
		}
		inFlush := map[int]int{}
		for i, c := range calls {
			if len(c.Items) != 10 || c.At != 0 {
				t.Errorf("flush %d: %d items at %v, want 10 at once", i+1, len(c.Items), c.At)
			}
			for _, d := range c.Items {
				inFlush[d.N]++
				if d.Val != d.N {
					t.Errorf("flush %d got item %d with Val %d: flush must see the stage's data", i+1, d.N, d.Val)
				}
			}
		}
		for i := range 100 {
			if inFlush[i] != 1 {
				t.Errorf("item %d in %d flushes, want 1", i, inFlush[i])
			}
		}
		got := drainReady(g) // all out while the sleeper still sleeps
		checkOnceInGroup(t, 0, itemIDs(0, 100), got)
		for _, r := range got {
			checkFlushedThenAfter(t, r)
		}
		st := rg.m.bulk.Stats()
		if st.Flushes[FlushSize] != 10 || st.TotalFlushes() != 10 || st.Items != 100 || st.MeanFill != 10 || st.Parked != 0 {
			t.Errorf("stats %+v: want 10 size flushes, 100 items, MeanFill 10, none parked", st)
		}
		g.Close()
		rg.p.Close()
	})
}

func TestBatchFlushOnBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rg := newBatchRig(t, []BatchOption{
			MaxBytes(100, func(d batchItem) int { return d.Size }), MaxItems(1000), MaxWait(time.Hour),
		})
		g := rg.p.NewGroup()
		rg.sleeper(time.Hour)
		n := 0
		add := func(ctx context.Context, size int) {
			rg.submit(g, ctx, batchItem{N: n, Val: n, Size: size})
			n++
			synctest.Wait()
		}
		for range 8 { // 4 x 30 reaches 100: two flushes of four
			add(bg, 30)
		}
		if s := rg.log.sizes(); !slices.Equal(s, []int{4, 4}) {
			t.Fatalf("flush sizes %v, want [4 4]", s)
		}
		add(bg, 500) // larger than the budget on its own: flushed alone, at once
		if s := rg.log.sizes(); !slices.Equal(s, []int{4, 4, 1}) {
			t.Fatalf("after an oversize item, flush sizes %v, want [4 4 1]", s)
		}
		if c := rg.log.snapshot()[2]; c.Items[0].Size != 500 || c.At != 0 {
			t.Errorf("third flush %+v, want the oversize item alone at 0", c)
		}

		// A cancelled member's bytes leave the batch with it.
		ctx, cancel := context.WithCancel(bg)
		add(bg, 30)
		add(ctx, 30)
		add(bg, 30) // 90
		cancel()
		synctest.Wait() // 60
		add(bg, 30)     // 90: no flush
		if s := rg.log.sizes(); len(s) != 3 {
			t.Fatalf("flush sizes %v: the cancelled member's bytes still count", s)
		}
		add(bg, 30) // 120
		calls := rg.log.snapshot()
		if len(calls) != 4 || len(calls[3].Items) != 4 {
			t.Fatalf("flush sizes %v, want [4 4 1 4]", rg.log.sizes())
		}
		for _, d := range calls[3].Items {
			if d.N == 10 {
				t.Errorf("the cancelled member was flushed")
			}
		}
		st := rg.m.bulk.Stats()
		if st.Flushes[FlushBytes] != 4 || st.TotalFlushes() != 4 || st.Cancelled != 1 || st.Items != 13 {
			t.Errorf("stats %+v: want 4 bytes flushes, 13 items, 1 cancelled", st)
		}
		got := drainReady(g)
		checkOnceInGroup(t, 0, itemIDs(0, n), got)
		for _, r := range got {
			if r.Data.N == 10 {
				if !errors.Is(r.Err, context.Canceled) || r.Data.Flush != 0 {
					t.Errorf("cancelled member: Err=%v Flush=%d", r.Err, r.Data.Flush)
				}
				continue
			}
			checkFlushedThenAfter(t, r)
		}
		g.Close()
		rg.p.Close()
	})
}

func TestBatchFlushOnLinger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const wait = 10 * time.Millisecond
		rg := newBatchRig(t, []BatchOption{MaxWait(wait)})
		g := rg.p.NewGroup()
		col := collectAsync(g, rg.log.t0)
		rg.sleeper(time.Hour) // nothing idles: only the linger can flush

		rg.submit(g, bg, batchItem{N: 0})
		time.Sleep(3 * time.Millisecond)
		rg.submit(g, bg, batchItem{N: 1, Val: 1}) // joins; the linger runs from the first item
		time.Sleep(wait - 3*time.Millisecond - time.Nanosecond)
		synctest.Wait()
		if n := len(rg.log.snapshot()); n != 0 {
			t.Fatalf("%d flushes 1ns before MaxWait", n)
		}
		time.Sleep(2*time.Millisecond + time.Nanosecond) // now 12ms
		rg.submit(g, bg, batchItem{N: 2, Val: 2})
		time.Sleep(time.Hour)

		calls := rg.log.snapshot()
		if len(calls) != 2 || calls[0].At != wait || len(calls[0].Items) != 2 ||
			calls[1].At != 12*time.Millisecond+wait || len(calls[1].Items) != 1 {
			t.Fatalf("want flushes of 2 at 10ms and of 1 at 22ms:%s", describeFlushes(calls))
		}
		got := col.results()
		want := map[int]time.Duration{0: wait, 1: wait, 2: 22 * time.Millisecond}
		for _, s := range got {
			checkFlushedThenAfter(t, s.r)
			if s.at != want[s.r.Data.N] {
				t.Errorf("request %d out at %v, want %v", s.r.Data.N, s.at, want[s.r.Data.N])
			}
		}
		if st := rg.m.bulk.Stats(); st.Flushes[FlushLinger] != 2 || st.TotalFlushes() != 2 ||
			st.ParkTime.Max != wait || st.ParkTime.Min != wait-3*time.Millisecond {
			t.Errorf("stats %+v: want 2 linger flushes, park time 7ms..10ms", st)
		}
		g.Close()
		rg.p.Close()
		checkOnceInGroup(t, 0, itemIDs(0, 3), requestsOf(col.wait()))
	})
}

func TestBatchMaxWaitZero(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rg := newBatchRig(t, []BatchOption{MaxWait(0)})
		g := rg.p.NewGroup()
		rg.sleeper(time.Hour)
		for i := range 5 {
			rg.submit(g, bg, batchItem{N: i, Val: i})
			synctest.Wait()
		}
		// MaxWait 0: whatever has gathered goes at once, so one at a time here.
		calls := rg.log.snapshot()
		if len(calls) != 5 {
			t.Fatalf("want 5 flushes of 1 at once:%s", describeFlushes(calls))
		}
		for _, c := range calls {
			if c.At != 0 || len(c.Items) != 1 {
				t.Errorf("want flushes of 1 at once:%s", describeFlushes(calls))
				break
			}
		}
		got := drainReady(g)
		checkOnceInGroup(t, 0, itemIDs(0, 5), got)
		g.Close()
		rg.p.Close()
	})
}

func TestBatchDefaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// No options: MaxItems 100, MaxWait 10ms, MaxFlushes 1.
		rg := newBatchRig(t, nil)
		rg.log.hook = func(context.Context, []Request[batchItem]) error {
			time.Sleep(time.Millisecond)
			return nil
		}
		g := rg.p.NewGroup()
		rg.sleeper(time.Hour)
		for i := range 250 {
			rg.submit(g, bg, batchItem{N: i, Val: i})
		}
		time.Sleep(time.Second)
		calls := rg.log.snapshot()
		ok := len(calls) == 3 &&
			len(calls[0].Items) == 100 && calls[0].At == 0 &&
			len(calls[1].Items) == 100 && calls[1].At == time.Millisecond && // waited for the one flush slot
			len(calls[2].Items) == 50 && calls[2].At == 10*time.Millisecond
		if !ok {
			t.Errorf("want flushes of 100 at 0, 100 at 1ms (one flush at a time), 50 at 10ms:%s", describeFlushes(calls))
		}
		if m := rg.log.maxConcurrent(); m != 1 {
			t.Errorf("%d flushes ran at once, default MaxFlushes is 1", m)
		}
		got := drainReady(g)
		checkOnceInGroup(t, 0, itemIDs(0, 250), got)
		if st := rg.m.bulk.Stats(); st.Name != "batch" {
			t.Errorf("default name %q, want \"batch\"", st.Name)
		}
		g.Close()
		rg.p.Close()
	})
}

// TestBatchIdleLoneRequest: a lone request must not pay MaxWait (W5).
func TestBatchIdleLoneRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rg := newBatchRig(t, []BatchOption{MaxItems(500), MaxWait(50 * time.Millisecond)})
		g := rg.p.NewGroup()
		const rounds = 20
		for i := range rounds {
			start := time.Now()
			rg.submit(g, bg, batchItem{N: i, Val: i})
			r := <-g.Out()
			checkFlushedThenAfter(t, r)
			if lat := time.Since(start); lat != 0 {
				t.Errorf("lone request %d took %v of fake time, want 0: nothing else could join its batch", i, lat)
			}
			time.Sleep(time.Millisecond)
		}
		st := rg.m.bulk.Stats()
		if st.Flushes[FlushIdle] != rounds || st.TotalFlushes() != rounds || st.ParkTime.Max != 0 {
			t.Errorf("stats %+v: want %d idle flushes and no park time", st, rounds)
		}

		// A burst: every request is out without any fake time passing, and
		// no flush waited for the linger.
		start := time.Now()
		for i := range 30 {
			rg.submit(g, bg, batchItem{N: rounds + i, Val: rounds + i})
		}
		for range 30 {
			checkFlushedThenAfter(t, <-g.Out())
		}
		if lat := time.Since(start); lat != 0 {
			t.Errorf("a burst of 30 took %v of fake time, want 0", lat)
		}
		if st := rg.m.bulk.Stats(); st.Flushes[FlushLinger] != 0 || st.Items != rounds+30 {
			t.Errorf("stats %+v: want no linger flush", st)
		}
		g.Close()
		rg.p.Close()
	})
}

func TestBatchMaxFlushes(t *testing.T) {
	for _, n := range []int{1, 2, 4} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rg := newBatchRig(t, []BatchOption{MaxItems(4), MaxFlushes(n), MaxWait(time.Hour)})
				const flushTime = 5 * time.Millisecond
				rg.log.hook = func(context.Context, []Request[batchItem]) error {
					time.Sleep(flushTime)
					return nil
				}
				g := rg.p.NewGroup()
				rg.sleeper(time.Hour)
				for i := range 40 { // ten full batches at once
					rg.submit(g, bg, batchItem{N: i, Val: i})
				}
				for range 40 {
					checkFlushedThenAfter(t, <-g.Out())
				}
				if m := rg.log.maxConcurrent(); m != n {
					t.Errorf("%d flushes ran at once, want exactly MaxFlushes %d", m, n)
				}
				calls := rg.log.snapshot()
				waves := (10 + n - 1) / n
				last := slices.MaxFunc(calls, func(a, b flushCall) int { return int(a.End - b.End) })
				if len(calls) != 10 || last.End != time.Duration(waves)*flushTime {
					t.Errorf("want 10 flushes in %d waves of %v:%s", waves, flushTime, describeFlushes(calls))
				}
				for i, c := range calls {
					if c.At%flushTime != 0 || c.At/flushTime != time.Duration(i/n) {
						t.Errorf("flush %d started at %v, want in wave %d:%s", i+1, c.At, i/n, describeFlushes(calls))
						break
					}
				}
				g.Close()
				rg.p.Close()
			})
		})
	}
}

func TestBatchKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const wait = 10 * time.Millisecond
		rg := newBatchRig(t, []BatchOption{
			BatchKey(func(d batchItem) int { return d.Key }), MaxItems(3), MaxWait(wait),
		})
		g := rg.p.NewGroup()
		rg.sleeper(time.Hour)
		n := 0
		add := func(key int) {
			rg.submit(g, bg, batchItem{N: n, Val: n, Key: key})
			n++
		}
		add(1)                           // key 1 lingers from 0
		time.Sleep(4 * time.Millisecond) //
		add(2)                           // key 2 lingers from 4ms
		time.Sleep(time.Millisecond)     //
		add(1)                           // joins key 1
		time.Sleep(15 * time.Millisecond)
		add(3) // at 20ms: key 3 fills by size
		add(3)
		add(3)
		synctest.Wait()
		calls := rg.log.snapshot()
		type want struct {
			at   time.Duration
			key  int
			size int
		}
		wants := []want{{wait, 1, 2}, {4*time.Millisecond + wait, 2, 1}, {20 * time.Millisecond, 3, 3}}
		if len(calls) != len(wants) {
			t.Fatalf("want flushes of key 1 at 10ms, key 2 at 14ms, key 3 at 20ms:%s", describeFlushes(calls))
		}
		for i, w := range wants {
			c := calls[i]
			if c.At != w.at || len(c.Items) != w.size || c.Items[0].Key != w.key {
				t.Errorf("flush %d: %d items of key %d at %v, want %d of key %d at %v",
					i+1, len(c.Items), c.Items[0].Key, c.At, w.size, w.key, w.at)
			}
		}

		// Many keys at once: no flush ever mixes keys.
		rng := rand.New(rand.NewPCG(1, 2))
		perKey := map[int]int{}
		for range 200 {
			k := rng.IntN(5)
			perKey[k]++
			add(k)
		}
		time.Sleep(time.Second)
		flushed := map[int]int{}
		for i, c := range rg.log.snapshot()[3:] {
			if len(c.Items) > 3 {
				t.Errorf("flush %d has %d items, MaxItems is 3", i+4, len(c.Items))
			}
			for _, d := range c.Items {
				if d.Key != c.Items[0].Key {
					t.Fatalf("flush %d mixes keys %d and %d", i+4, c.Items[0].Key, d.Key)
				}
				flushed[d.Key]++
			}
		}
		for k, c := range perKey {
			if flushed[k] != c {
				t.Errorf("key %d: %d flushed, want %d", k, flushed[k], c)
			}
		}
		got := drainReady(g)
		checkOnceInGroup(t, 0, itemIDs(0, n), got)
		for _, r := range got {
			checkFlushedThenAfter(t, r)
		}
		g.Close()
		rg.p.Close()
	})
}

// TestBatchGroupsShareBatch: groups share batches, and each gets back only
// its own results; the ordered one in order.
func TestBatchGroupsShareBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rg := newBatchRig(t, []BatchOption{MaxItems(16), MaxWait(5 * time.Millisecond)})
		gs := []*Group[batchItem]{rg.p.NewGroup(), rg.p.NewGroup(), rg.p.NewGroup(Ordered())}
		var cols []*collector
		for _, g := range gs {
			cols = append(cols, collectAsync(g, rg.log.t0))
		}
		rg.sleeper(time.Hour)
		const per = 50
		for i := range per {
			for gi, g := range gs {
				rg.submit(g, bg, batchItem{G: gi, N: i, Val: i})
			}
		}
		for _, g := range gs {
			g.Close()
		}
		for gi, c := range cols {
			got := requestsOf(c.wait())
			checkOnceInGroup(t, gi, itemIDs(gi, per), got)
			for i, r := range got {
				checkFlushedThenAfter(t, r)
				if gi == 2 && r.Data.N != i {
					t.Errorf("ordered group: result %d is request %d", i, r.Data.N)
				}
			}
		}
		mixed := false
		for _, c := range rg.log.snapshot() {
			groups := map[int]bool{}
			for _, d := range c.Items {
				groups[d.G] = true
			}
			mixed = mixed || len(groups) > 1
		}
		if !mixed {
			t.Errorf("no flush held requests of two groups; the test did not test sharing:%s", describeFlushes(rg.log.snapshot()))
		}
		rg.p.Close()
	})
}

// TestBatchBackpressure: parked requests count as in flight, so a flush
// that cannot keep up blocks Submit at WithMaxInFlight, and Submit resumes
// when the flush is released.
func TestBatchBackpressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const bound = 8
		rg := newBatchRig(t, []BatchOption{MaxItems(4), MaxFlushes(1), MaxWait(time.Hour)},
			WithPipelines(2), WithMaxInFlight(bound))
		gate := make(chan struct{})
		var maxSeen atomic.Int64
		sample := func() {
			n := int64(rg.p.Stats().InFlight)
			for {
				old := maxSeen.Load()
				if n <= old || maxSeen.CompareAndSwap(old, n) {
					return
				}
			}
		}
		rg.log.hook = func(context.Context, []Request[batchItem]) error {
			sample()
			<-gate
			return nil
		}
		g := rg.p.NewGroup()
		var submitted atomic.Int64
		const total = 40
		subDone := make(chan struct{})
		go func() {
			defer close(subDone)
			for i := range total {
				if err := g.Submit(bg, batchItem{N: i, Val: i}); err != nil {
					t.Errorf("Submit %d: %v", i, err)
					return
				}
				submitted.Add(1)
			}
			g.Close()
		}()
		synctest.Wait()
		if n := submitted.Load(); n != bound {
			t.Fatalf("%d submitted while the flush is blocked, want Submit to block at %d", n, bound)
		}
		if st := rg.p.Stats(); st.InFlight != bound {
			t.Errorf("InFlight %d, want %d (parked requests count)", st.InFlight, bound)
		}
		if st := rg.m.bulk.Stats(); st.Parked != bound {
			t.Errorf("batcher stats %+v: want %d parked", st, bound)
		}
		// A Submit with a deadline gives up with it.
		tctx, cancel := context.WithTimeout(bg, time.Second)
		if err := g.Submit(tctx, batchItem{G: 9}); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("blocked Submit returned %v, want context.DeadlineExceeded", err)
		}
		cancel()
		if d := rg.since(); d != time.Second {
			t.Errorf("blocked Submit gave up after %v, want 1s", d)
		}
		close(gate)
		var got []Request[batchItem]
		for r := range g.Out() {
			sample()
			got = append(got, r)
		}
		<-subDone
		checkOnceInGroup(t, 0, itemIDs(0, total), got)
		for _, r := range got {
			checkFlushedThenAfter(t, r)
		}
		if m := maxSeen.Load(); m > bound {
			t.Errorf("InFlight reached %d, bound %d", m, bound)
		}
		rg.p.Close()
	})
}

func TestBatchSharedByTwoPipelines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := newBatchLog()
		m := newBatchM(NewBatcher(log.flush, MaxItems(1)))
		p1, err := New[batchItem](m, WithPipelines(1))
		if err != nil {
			t.Fatal(err)
		}
		p2, err := New[batchItem](m, WithPipelines(1))
		if err != nil {
			t.Fatal(err)
		}
		g1, g2 := p1.NewGroup(), p2.NewGroup()
		if err := g1.Submit(bg, batchItem{N: 0}); err != nil {
			t.Fatal(err)
		}
		checkFlushedThenAfter(t, <-g1.Out()) // binds the batcher to p1
		if err := g2.Submit(bg, batchItem{G: 1, N: 0}); err != nil {
			t.Fatal(err)
		}
		r := <-g2.Out()
		if !errors.Is(r.Err, ErrBatcherShared) || r.Data.Flush != 0 || r.Data.After != 0 {
			t.Errorf("request of the second Pipelines: Err=%v Flush=%d After=%d, want ErrBatcherShared, not flushed",
				r.Err, r.Data.Flush, r.Data.After)
		}
		if err := g1.Submit(bg, batchItem{N: 1, Val: 1}); err != nil {
			t.Fatal(err)
		}
		checkFlushedThenAfter(t, <-g1.Out()) // p1 is unaffected
		p2.Close()
		p1.Close()
		if n := len(log.snapshot()); n != 2 {
			t.Errorf("%d flushes, want 2 (p1's requests only)", n)
		}
	})
}

// A misconfigured Batcher is reported the way every configuration error
// is: New fails naming it, or, for a batcher New cannot find, each request
// added to it fails with the error. NewBatcher used to panic, while New
// returned errors.
func TestBatchInvalidOptions(t *testing.T) {
	okFlush := func(context.Context, []Request[int]) error { return nil }
	size := func(int) int { return 1 }
	cases := []struct {
		name    string
		flush   func(context.Context, []Request[int]) error
		opts    []BatchOption
		mention string
	}{
		{"nil flush", nil, nil, "flush"},
		{"MaxItems(0)", okFlush, []BatchOption{MaxItems(0)}, "MaxItems"},
		{"MaxItems(-1)", okFlush, []BatchOption{MaxItems(-1)}, "MaxItems"},
		{"MaxWait(-1ns)", okFlush, []BatchOption{MaxWait(-1)}, "MaxWait"},
		{"MaxFlushes(0)", okFlush, []BatchOption{MaxFlushes(0)}, "MaxFlushes"},
		{"MaxFlushes(-3)", okFlush, []BatchOption{MaxFlushes(-3)}, "MaxFlushes"},
		{"FlushTimeout(0)", okFlush, []BatchOption{FlushTimeout(0)}, "FlushTimeout"},
		{"MaxBytes(0)", okFlush, []BatchOption{MaxBytes(0, size)}, "MaxBytes"},
		{"MaxBytes nil size", okFlush, []BatchOption{MaxBytes[int](10, nil)}, "MaxBytes"},
		{"MaxBytes other type", okFlush, []BatchOption{MaxBytes(10, func(string) int { return 1 })}, "MaxBytes"},
		{"BatchKey nil", okFlush, []BatchOption{BatchKey[int, string](nil)}, "BatchKey"},
		{"BatchKey other type", okFlush, []BatchOption{BatchKey(func(s string) string { return s })}, "BatchKey"},
		{"nil option", okFlush, []BatchOption{nil}, "nil"},
		{"one bad among good", okFlush, []BatchOption{MaxItems(5), MaxWait(time.Second), MaxFlushes(0)}, "MaxFlushes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				// A batcher held in a field of the machine: New reports it.
				b := NewBatcher(tc.flush, append(tc.opts, BatchName("orders"))...)
				p, err := New[int](&batchHolder{bulk: b})
				if err == nil {
					p.Close()
					t.Fatal("New succeeded with a misconfigured batcher")
				}
				if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), tc.mention) || !strings.Contains(err.Error(), `"orders"`) {
					t.Errorf("New: %v; want ErrInvalidOption naming %q and the batcher", err, tc.mention)
				}
				// One New cannot see (behind a function): its requests
				// fail with the error instead.
				hidden := &hiddenBatcher{}
				hidden.add = NewBatcher(tc.flush, tc.opts...).Add
				p = mustNew[int](t, hidden)
				if r := p.Do(context.Background(), 1)[0]; !errors.Is(r.Err, ErrInvalidOption) || !strings.Contains(r.Err.Error(), tc.mention) {
					t.Errorf("request through the hidden batcher: %v; want ErrInvalidOption naming %q", r.Err, tc.mention)
				}
				p.Close()
			})
		})
	}
	// Edges that are valid.
	NewBatcher(okFlush, MaxItems(1), MaxWait(0), MaxFlushes(1), MaxBytes(1, size),
		BatchKey(func(v int) int { return v % 2 }), BatchName(""))
}

// batchHolder holds its batcher in a field, where New finds it.
type batchHolder struct{ bulk *Batcher[int] }

func (m *batchHolder) Start(r Request[int]) Request[int] { return m.bulk.Add(r) }
func (m *batchHolder) Close()                            {}

// hiddenBatcher reaches its batcher only through a function, where New cannot
// find it.
type hiddenBatcher struct {
	add func(Request[int]) Request[int]
}

func (m *hiddenBatcher) Start(r Request[int]) Request[int] { return m.add(r) }
func (m *hiddenBatcher) Close()                            {}

func TestBatchStats(t *testing.T) {
	for r, name := range []string{"size", "bytes", "linger", "idle", "shutdown"} {
		if got := FlushReason(r).String(); got != name {
			t.Errorf("FlushReason(%d) = %q, want %q", r, got, name)
		}
	}
	if got := FlushReason(99).String(); got != "unknown" {
		t.Errorf("FlushReason(99) = %q", got)
	}
	synctest.Test(t, func(t *testing.T) {
		const wait = 10 * time.Millisecond
		rg := newBatchRig(t, []BatchOption{
			MaxItems(4), MaxBytes(100, func(d batchItem) int { return d.Size }), MaxWait(wait), BatchName("db"),
		})
		rg.log.hook = func(_ context.Context, b []Request[batchItem]) error {
			for i := range b {
				if b[i].Data.Fault == faultOwnErr {
					b[i].Err = errBatchOwn
				}
			}
			if len(b) == 4 {
				time.Sleep(time.Millisecond) // the size flush takes 1ms
			}
			return nil
		}
		g := rg.p.NewGroup()
		rg.sleeper(100 * time.Millisecond)
		n := 0
		add := func(ctx context.Context, d batchItem) {
			d.N, d.Val = n, n
			n++
			rg.submit(g, ctx, d)
		}
		for i := range 4 { // size, one member failing
			fault := 0
			if i == 2 {
				fault = faultOwnErr
			}
			add(bg, batchItem{Size: 1, Fault: fault})
		}
		synctest.Wait()
		add(bg, batchItem{Size: 200}) // bytes
		time.Sleep(2 * time.Millisecond)
		add(bg, batchItem{Size: 1}) // linger at 12ms, parked 10ms
		time.Sleep(13 * time.Millisecond)
		ctx, cancel := context.WithCancel(bg)
		add(ctx, batchItem{Size: 1}) // cancelled after 2ms
		time.Sleep(2 * time.Millisecond)
		cancel()
		time.Sleep(time.Second)     // the sleeper is done
		add(bg, batchItem{Size: 1}) // idle
		synctest.Wait()
		rg.sleeper(time.Minute)
		add(bg, batchItem{Size: 1}) // shutdown
		synctest.Wait()
		mid := rg.m.bulk.Stats()
		if mid.Parked != 1 {
			t.Errorf("before Close: stats %+v, want 1 parked", mid)
		}
		g.Close()
		rg.p.Close()
		got := drain(g)
		checkOnceInGroup(t, 0, itemIDs(0, n), got)

		st := rg.m.bulk.Stats()
		want := [numFlushReasons]uint64{1, 1, 1, 1, 1}
		if st.Flushes != want || st.TotalFlushes() != 5 {
			t.Errorf("Flushes %v, want one of each reason %v", st.Flushes, want)
		}
		if st.Name != "db" || st.Items != 8 || st.Failed != 1 || st.Cancelled != 1 || st.Parked != 0 || st.MeanFill != 1.6 {
			t.Errorf("stats %+v: want db, 8 items, 1 failed, 1 cancelled, 0 parked, MeanFill 1.6", st)
		}
		if st.FlushTime.Count != 5 || st.FlushTime.Max != time.Millisecond || st.FlushTime.Min != 0 {
			t.Errorf("FlushTime %+v: want 5 flushes, 0..1ms", st.FlushTime)
		}
		if st.ParkTime.Count != 9 || st.ParkTime.Max != wait || st.ParkTime.Min != 0 {
			t.Errorf("ParkTime %+v: want 9 (8 flushed, 1 cancelled), 0..10ms", st.ParkTime)
		}
	})
}
