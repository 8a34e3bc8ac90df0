package statepipe

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// keeper is a machine whose Start keeps a copy of each request it runs
// (on kept) and then routes it as route says: finish, or go on to Wait,
// which blocks until release is closed. bulk is a Batcher the test can
// Add the kept copies to.
type keeper struct {
	kept    chan Request[int]
	route   func(r Request[int]) Stage[int]
	release chan struct{}
	wait    Stage[int]
	bulk    *Batcher[int]
}

func newKeeper(route func(k *keeper, r Request[int]) Stage[int]) *keeper {
	k := &keeper{kept: make(chan Request[int], 16), release: make(chan struct{})}
	k.wait = k.Wait
	k.route = func(r Request[int]) Stage[int] { return route(k, r) }
	k.bulk = NewBatcher(func(_ context.Context, batch []Request[int]) error {
		for i := range batch {
			batch[i].Data += 1000
		}
		return nil
	})
	return k
}

func (k *keeper) Start(r Request[int]) Request[int] {
	k.kept <- r
	r.Data++
	r.Next = k.route(r)
	return r
}

func (k *keeper) Wait(r Request[int]) Request[int] {
	<-k.release
	r.Data += 10
	return r
}

func (k *keeper) Close() {}

// A copy of a request kept past its stage must never be parked: the
// request has gone on without it. It used to be accepted once the request
// had finished (the worker's call counter had not moved), and the request
// then came out twice and Close hung; after Close, cancelling the copy's
// context panicked with "send on closed channel".
func TestStaleCopyIsRefusedBeforeAndAfterClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k := newKeeper(func(*keeper, Request[int]) Stage[int] { return nil })
		p := mustNew[int](t, k, WithWorkers(2))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		res := p.Do(ctx, 1)
		if res[0].Err != nil || res[0].Data != 2 {
			t.Fatalf("result %+v, want 2", res[0])
		}
		stale := <-k.kept

		if r := k.bulk.Add(stale); !errors.Is(r.Err, ErrNotRunning) {
			t.Errorf("Add of a copy kept past its finished request: Err %v, want ErrNotRunning", r.Err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if r := k.bulk.Add(stale); !errors.Is(r.Err, ErrNotRunning) {
			t.Errorf("Add of a stale copy after Close: Err %v, want ErrNotRunning", r.Err)
		}
		cancel() // nothing may be watching the copy's context
		synctest.Wait()
		if s := p.Stats(); s.Submitted != 1 || s.Completed != 1 || s.InFlight != 0 {
			t.Errorf("stats %+v: want 1 submitted, 1 completed, none inside", s)
		}
	})
}

// A copy from an earlier stage is stale too while the request runs a
// later stage: parking it (from another goroutine, as a stage's helper
// might) would take the request away from the stage running it.
func TestCopyFromAnEarlierStageIsRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k := newKeeper(func(k *keeper, _ Request[int]) Stage[int] { return k.wait })
		p := mustNew[int](t, k, WithWorkers(2))
		done := make(chan []Request[int])
		go func() { done <- p.Do(context.Background(), 1) }()
		stale := <-k.kept
		synctest.Wait() // the request waits in Wait

		if r := k.bulk.Add(stale); !errors.Is(r.Err, ErrNotRunning) {
			t.Errorf("Add of Start's copy while Wait runs: Err %v, want ErrNotRunning", r.Err)
		}
		close(k.release)
		res := <-done
		if res[0].Err != nil || res[0].Data != 12 {
			t.Errorf("result %+v, want 12: Start, then Wait, and no batch", res[0])
		}
		p.Close()
	})
}

// A stage may return a Request it did not get (one it kept from another
// request, say): only its four fields pass on. The request running the
// stage keeps its own identity and group, and the other request is not
// touched.
func TestStageReturningAnotherRequestPassesOnlyItsFields(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var first Request[int]
		var once sync.Once
		k := newKeeper(func(*keeper, Request[int]) Stage[int] { return nil })
		swap := &swapper{keeper: k}
		swap.start = func(r Request[int]) Request[int] {
			once.Do(func() { first = r })
			if r.Data == 2 {
				return first // request 2 returns request 1's copy
			}
			r.Data += 100
			return r
		}
		p := mustNew[int](t, swap, WithWorkers(1))
		g := p.NewGroup(Ordered())
		for _, v := range []int{1, 2} {
			if err := g.Submit(context.Background(), v); err != nil {
				t.Fatal(err)
			}
		}
		g.Close()
		res := drain(g)
		if len(res) != 2 {
			t.Fatalf("%d results, want 2", len(res))
		}
		if res[0].Data != 101 || res[1].Data != 1 {
			t.Errorf("Data %d and %d, want 101 and 1 (request 2 took request 1's fields)", res[0].Data, res[1].Data)
		}
		if res[0].ID() == res[1].ID() || res[0].ID() == 0 || res[1].ID() == 0 {
			t.Errorf("ids %d and %d: each request keeps its own", res[0].ID(), res[1].ID())
		}
		p.Close()
	})
}

// swapper runs start as its only stage.
type swapper struct {
	*keeper
	start func(Request[int]) Request[int]
}

func (s *swapper) Start(r Request[int]) Request[int] { return s.start(r) }

// Add from another goroutine while the stage runs races with the stage's
// return: exactly one of them has the request, whichever wins. Items come
// in three kinds: the stage waits for the Add (Add wins), the Add comes
// late (the stage wins), and neither waits (a true race).
func TestAddRacingItsStageHasOneWinner(t *testing.T) {
	const n = 300
	bulk := NewBatcher(func(_ context.Context, batch []Request[int]) error {
		for i := range batch {
			batch[i].Data = -batch[i].Data // parked: marked
		}
		return nil
	}, MaxWait(0))
	m := &racer{bulk: bulk}
	p := mustNew[int](t, m, WithWorkers(4))
	items := make([]int, n)
	for i := range items {
		items[i] = i + 1
	}
	res := p.Do(context.Background(), items...)
	parked := [3]int{}
	for i, r := range res {
		switch {
		case r.Err != nil:
			t.Errorf("item %d: %v", i, r.Err)
		case r.Data == -(i + 1):
			parked[(i+1)%3]++
		case r.Data != i+1:
			t.Errorf("item %d came out as %d", i, r.Data)
		}
	}
	p.Close()
	if s := p.Stats(); s.Completed+s.Failed != n {
		t.Errorf("%d out, want %d: a request came out twice or not at all", s.Completed+s.Failed, n)
	}
	if parked[0] != n/3 {
		t.Errorf("%d of %d Adds that the stage waited for took the request, want all", parked[0], n/3)
	}
	t.Logf("parked by the racing Add: %d of %d late, %d of %d racing", parked[1], n/3, parked[2], n/3)
}

// racer's stage hands its request to a goroutine that Adds it, and
// returns it too, as the request's kind says (see the test).
type racer struct{ bulk *Batcher[int] }

func (m *racer) Start(r Request[int]) Request[int] {
	added := make(chan struct{})
	go func() {
		defer close(added)
		if r.Data%3 == 1 {
			time.Sleep(time.Millisecond) // late: the stage has returned
		}
		m.bulk.Add(r)
	}()
	if r.Data%3 == 0 {
		<-added
	}
	return r
}

func (m *racer) Close() {}

// A stale copy given to a Batcher not used yet must not bind it to its
// Pipelines, closed or not: the batcher then failed its real use elsewhere
// (ErrBatcherShared), and after Close its goroutine leaked (found by
// review).
func TestStaleCopyDoesNotBindABatcher(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k := newKeeper(func(*keeper, Request[int]) Stage[int] { return nil })
		p := mustNew[int](t, k, WithWorkers(1))
		p.Do(context.Background(), 1)
		stale := <-k.kept
		p.Close()
		fresh := NewBatcher(func(context.Context, []Request[int]) error { return nil })
		if r := fresh.Add(stale); !errors.Is(r.Err, ErrNotRunning) {
			t.Errorf("stale Add: %v, want ErrNotRunning", r.Err)
		}
		other := mustNew[int](t, &parkOnly{bulk: fresh}, WithWorkers(1))
		if r := other.Do(context.Background(), 2)[0]; r.Err != nil {
			t.Errorf("the batcher's real use: %v", r.Err)
		}
		other.Close() // the bubble fails the test if a goroutine is left
	})
}

// looper loops in Loop for a count of calls set in Data, keeping a copy of
// its request from the first call and trying to park it at the last.
type looper struct {
	bulk *Batcher[int]
	loop Stage[int]
	kept Request[int]
	n    int
}

func (m *looper) Start(r Request[int]) Request[int] { r.Next = m.loop; return r }
func (m *looper) Loop(r Request[int]) Request[int] {
	m.n++
	switch {
	case m.n == 1:
		m.kept = r
	case m.n == r.Data:
		return m.bulk.Add(m.kept) // stale: refused, and the request goes on
	}
	if m.n < r.Data+5 {
		r.Next = m.loop
	}
	return r
}
func (m *looper) Close() {}

// The count of stage calls in a tag has 16 bits: 65,536 calls later, a
// copy kept from the first call carried the current tag again and was
// taken (found by review). A request that makes that many calls moves to
// a fresh record, which no copy names.
func TestStaleCopyIsRefusedAfterTheCallCountWraps(t *testing.T) {
	m := &looper{bulk: NewBatcher(func(context.Context, []Request[int]) error { return nil })}
	m.loop = m.Loop
	p := mustNew[int](t, m, WithWorkers(1))
	defer p.Close()
	r := p.Do(context.Background(), 1+1<<callBits)[0]
	if !errors.Is(r.Err, ErrNotRunning) {
		t.Errorf("Err %v after %d calls, want ErrNotRunning: the stale copy was taken", r.Err, m.n)
	}
}
