package otel

import (
	"sync"
	"testing"
	"time"
)

func TestInflightConcurrent(t *testing.T) {
	f := newInflight()
	var wg sync.WaitGroup
	for g := range uint64(8) {
		wg.Go(func() {
			for seq := range uint64(2000) {
				id := (g+1)<<32 | seq
				if _, dup := f.put(id, flight{wait: time.Duration(seq)}); dup {
					t.Errorf("put %x: replaced", id)
				}
				if fl, ok := f.park(id, time.Now()); !ok || fl.wait != time.Duration(seq) || fl.parked.IsZero() {
					t.Errorf("park %x: %v %v", id, fl, ok)
				}
				if seq%2 == 1 { // keep one in flight
					for _, id := range []uint64{id - 1, id} {
						if _, ok := f.take(id); !ok {
							t.Errorf("take %x: missing", id)
						}
					}
				}
			}
		})
	}
	wg.Wait()
	if n := f.len(); n != 0 {
		t.Errorf("%d left", n)
	}
}

// TestInflightSpread checks that the ids of a few groups spread over the
// shards, so that concurrent workers rarely share a lock.
func TestInflightSpread(t *testing.T) {
	f := newInflight()
	const groups, perGroup = 4, 1024
	for g := range uint64(groups) {
		for seq := range uint64(perGroup) {
			f.put((g+1)<<32|seq, flight{})
		}
	}
	mean := groups * perGroup / len(f.shards)
	for i := range f.shards {
		if n := len(f.shards[i].m); n < mean/2 || n > mean*2 {
			t.Errorf("shard %d holds %d ids; the mean is %d", i, n, mean)
		}
	}
}
