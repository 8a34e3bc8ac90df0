package statepipe

import (
	"testing"
	"testing/synctest"
	"time"
)

// FuzzBatchEdges fuzzes batch size, linger and flush concurrency against
// item counts and arrival gaps, in fake time. Flushes take no fake time,
// so a request waits only while the engine is kept busy (by a sleeper for
// the first `busy` of the run), and never longer than MaxWait; once
// nothing else runs, a request is flushed at once.
//
// Run as a plain test it replays the seed corpus; fuzz with
//
//	go test -run '^$' -fuzz FuzzBatchEdges
func FuzzBatchEdges(f *testing.F) {
	type seed struct {
		items, waitMs, flushes uint8
		count                  uint16
		gaps                   []byte
	}
	for _, s := range []seed{
		{10, 5, 0, 100, []byte{0}},                       // back to back
		{0, 0, 0, 1, nil},                                // MaxItems 1, MaxWait 0, one item
		{63, 50, 3, 300, []byte{0, 0, 0, 7, 0, 0, 201}},  // big batches, occasional gaps
		{2, 0, 1, 0, []byte{1}},                          // no items
		{6, 1, 2 | 4<<2, 257, []byte{0, 3, 0, 0, 0, 9}},  // busy for 4ms
		{3, 10, 3 | 15<<2, 64, []byte{1, 1, 1, 1}},       // every item after a gap, busy 15ms
		{99, 49, 1 | 8<<2, 199, []byte{0, 0, 0, 0, 255}}, // MaxItems 36, long gaps
		{0, 25, 3, 300, []byte{0}},                       // MaxItems 1, four flushes at once
	} {
		f.Add(s.items, s.waitMs, s.flushes, s.count, s.gaps)
	}
	f.Fuzz(func(t *testing.T, items, waitMs, flushes uint8, count uint16, gaps []byte) {
		maxItems := 1 + int(items)%64
		maxWait := time.Duration(waitMs%51) * time.Millisecond
		maxFlushes := 1 + int(flushes&3)
		busy := time.Duration(flushes>>2%16) * time.Millisecond
		n := int(count) % 301
		gap := func(i int) time.Duration {
			if len(gaps) == 0 {
				return 0
			}
			b := gaps[i%len(gaps)]
			if b&1 == 0 {
				return 0
			}
			return time.Duration(b>>1) * 100 * time.Microsecond
		}
		synctest.Test(t, func(t *testing.T) {
			rg := newBatchRig(t, []BatchOption{MaxItems(maxItems), MaxWait(maxWait), MaxFlushes(maxFlushes)},
				WithPipelines(2))
			g := rg.p.NewGroup()
			col := collectAsync(g, rg.log.t0)
			if busy > 0 {
				rg.sleeper(busy)
			}
			var maxGap time.Duration
			for i := range n {
				rg.submit(g, bg, batchItem{N: i, Val: i})
				d := gap(i)
				maxGap = max(maxGap, d)
				time.Sleep(d)
			}
			g.Close()
			got := col.wait()
			rg.p.Close()

			checkOnceInGroup(t, 0, itemIDs(0, n), requestsOf(got))
			for _, s := range got {
				r := s.r
				checkFlushedThenAfter(t, r)
				lat := s.at - r.Data.At.Sub(rg.log.t0)
				if lat > maxWait+maxGap {
					t.Errorf("request %d waited %v, more than MaxWait %v + largest gap %v", r.Data.N, lat, maxWait, maxGap)
				}
				if lat > maxWait {
					t.Errorf("request %d waited %v, more than MaxWait %v", r.Data.N, lat, maxWait)
				}
				if r.Data.At.Sub(rg.log.t0) > busy && lat != 0 {
					t.Errorf("request %d, submitted at %v when nothing else ran, waited %v",
						r.Data.N, r.Data.At.Sub(rg.log.t0), lat)
				}
			}
			calls := rg.log.snapshot()
			seen := make([]int, n)
			total := 0
			for i, c := range calls {
				if len(c.Items) < 1 || len(c.Items) > maxItems || len(c.Items) > n {
					t.Errorf("flush %d has %d items; MaxItems %d, %d items in all", i+1, len(c.Items), maxItems, n)
				}
				total += len(c.Items)
				for _, d := range c.Items {
					seen[d.N]++
				}
			}
			for i, k := range seen {
				if k != 1 {
					t.Errorf("item %d flushed %d times", i, k)
				}
			}
			if total != n {
				t.Errorf("%d items flushed, want %d", total, n)
			}
			if minFlushes := (n + maxItems - 1) / maxItems; len(calls) < minFlushes {
				t.Errorf("%d flushes for %d items with MaxItems %d, want at least %d", len(calls), n, maxItems, minFlushes)
			}
			if m := rg.log.maxConcurrent(); m > maxFlushes {
				t.Errorf("%d flushes at once, MaxFlushes %d", m, maxFlushes)
			}
			st := rg.m.bulk.Stats()
			if st.TotalFlushes() != uint64(len(calls)) || st.Items != uint64(n) || st.Parked != 0 || st.Cancelled != 0 {
				t.Errorf("stats %+v: want %d flushes, %d items, none parked", st, len(calls), n)
			}
			if maxWait == 0 && st.Flushes[FlushIdle]+st.Flushes[FlushShutdown] != 0 {
				t.Errorf("MaxWait 0: flushes %v, want none left for idle", st.Flushes)
			}
		})
	})
}
