package statepipe

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"
)

// Do returns every item's result in the order of the items, whatever
// order they finish in.
func TestDoReturnsResultsInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newChainM()
		m.onA = func(m *chainM, r Request[int]) Request[int] {
			time.Sleep(time.Duration(rand.IntN(5)) * time.Millisecond)
			return m.stageA(r)
		}
		p := mustNew[int](t, m, WithWorkers(4))
		items := make([]int, 200)
		for i := range items {
			items[i] = i * 3
		}
		res := p.Do(context.Background(), items...)
		if len(res) != len(items) {
			t.Fatalf("%d results for %d items", len(res), len(items))
		}
		for i, r := range res {
			if r.Err != nil || r.Data != chainOut(items[i]) || r.Next != nil {
				t.Errorf("result %d: Data %d, Err %v; want %d", i, r.Data, r.Err, chainOut(items[i]))
			}
		}
		p.Close()
	})
}

// Submitting every item and then reading Out hangs once the bound is
// reached; Do never does, whatever the number of items.
func TestDoNeverHangsPastTheBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := mustNew[int](t, newChainM(), WithWorkers(2), WithMaxInFlight(8))
		items := make([]int, 5000)
		res := p.Do(context.Background(), items...)
		for i, r := range res {
			if r.Err != nil || r.Data != chainOut(0) {
				t.Fatalf("result %d: %+v", i, r)
			}
		}
		p.Close()
	})
}

// Items Do could not let in come back with the reason and their data as
// given, and nothing else is lost.
func TestDoReportsItemsNotAccepted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		m := newChainM()
		m.onStart = func(m *chainM, r Request[int]) Request[int] {
			if r.Data == 3 {
				cancel() // items from here on are refused at Submit, or fail at their next stage
			}
			return m.start(r)
		}
		p := mustNew[int](t, m, WithWorkers(1), WithMaxInFlight(1))
		res := p.Do(ctx, 0, 1, 2, 3, 4, 5)
		for i, r := range res[:3] {
			if r.Err != nil || r.Data != chainOut(i) {
				t.Errorf("result %d: %+v, want %d", i, r, chainOut(i))
			}
		}
		if !errors.Is(res[3].Err, context.Canceled) {
			t.Errorf("result 3: Err %v, want context.Canceled at its next stage", res[3].Err)
		}
		for i, r := range res[4:] {
			if !errors.Is(r.Err, context.Canceled) || r.Data != 4+i {
				t.Errorf("result %d: Data %d, Err %v; want the item as given, context.Canceled", 4+i, r.Data, r.Err)
			}
		}
		if got := p.Stats().Submitted; got != 4 {
			t.Errorf("%d submitted, want 4", got)
		}

		if res := p.Do(nil, 7); !errors.Is(res[0].Err, ErrNilContext) || res[0].Data != 7 { //nolint:staticcheck // a nil context on purpose
			t.Errorf("nil context: %+v, want ErrNilContext", res[0])
		}
		if res := p.Do(context.Background()); len(res) != 0 {
			t.Errorf("no items: %d results", len(res))
		}
		p.Close()
		if res := p.Do(context.Background(), 8, 9); !errors.Is(res[0].Err, ErrClosed) || !errors.Is(res[1].Err, ErrClosed) {
			t.Errorf("after Close: %+v, want ErrClosed for both", res)
		}
	})
}

// Do is the cheap way to call statepipe per request: one allocation for
// the results and a few for its group, nothing per item.
func TestDoAllocatesPerCallNotPerItem(t *testing.T) {
	if raceEnabled {
		t.Skip("under the race detector sync.Pool drops records at random")
	}
	p := mustNew[int](t, newChainM(), WithWorkers(2))
	defer p.Close()
	ctx := context.Background()
	items := make([]int, 64)
	p.Do(ctx, items...) // warm the record pool
	allocs := testing.AllocsPerRun(100, func() { p.Do(ctx, items...) })
	if allocs > 4 {
		t.Errorf("Do of 64 items: %.1f allocations, want at most 4", allocs)
	}
}
