package statepipe

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

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
		p = etNew[int](t, c, WithWorkers(2), WithObserver(obs))
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
		p = etNew[int](t, m, WithWorkers(2), WithObserver(obs))
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
