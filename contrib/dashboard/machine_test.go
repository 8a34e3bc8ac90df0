package dashboard_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/statepipe/statepipe"
)

// orders is the machine the tests watch: every item starts, odd ones are
// checked, multiples of 7 fail there, the rest are stored in batches and
// confirmed.
type orders struct {
	bulk    *statepipe.Batcher[int]
	release chan struct{} // when not nil, each flush waits for it: work stays in flight

	check, store, confirm statepipe.Stage[int] // made once: no allocation per transition
}

func newOrders() *orders {
	m := &orders{}
	m.check, m.store, m.confirm = m.Check, m.Store, m.Confirm
	m.bulk = statepipe.NewBatcher(func(ctx context.Context, batch []statepipe.Request[int]) error {
		if m.release != nil {
			select {
			case <-m.release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		for i := range batch {
			batch[i].Next = m.confirm
		}
		return nil
	}, statepipe.MaxItems(16), statepipe.BatchName("bulk"))
	return m
}

func (m *orders) Start(r statepipe.Request[int]) statepipe.Request[int] {
	if r.Data%2 == 1 {
		r.Next = m.check
	} else {
		r.Next = m.store
	}
	return r
}

var errBadOrder = errors.New("bad order")

func (m *orders) Check(r statepipe.Request[int]) statepipe.Request[int] {
	if r.Data%7 == 0 {
		r.Err = errBadOrder
		return r
	}
	r.Next = m.store
	return r
}

func (m *orders) Store(r statepipe.Request[int]) statepipe.Request[int] { return m.bulk.Add(r) }

func (m *orders) Confirm(r statepipe.Request[int]) statepipe.Request[int] { return r }

func (m *orders) Close() {}

var orderStages = []string{"Start", "Check", "Confirm", "Store"}

// newPipelines starts the orders machine and closes it at the end of the
// test.
func newPipelines(t testing.TB) (*statepipe.Pipelines[int], *orders) {
	t.Helper()
	m := newOrders()
	p, err := statepipe.New[int](m, statepipe.WithPipelines(2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, m
}

// load runs items [from, to) through a group of p and returns once every
// one has come out: the Pipelines are idle then, and Stats exact.
func load(t *testing.T, p *statepipe.Pipelines[int], from, to int) {
	t.Helper()
	g := p.NewGroup()
	var wg sync.WaitGroup
	wg.Go(func() {
		defer g.Close()
		for i := from; i < to; i++ {
			if err := g.Submit(t.Context(), i); err != nil {
				t.Error(err)
				return
			}
		}
	})
	n := 0
	for range g.Out() {
		n++
	}
	wg.Wait()
	if n != to-from {
		t.Errorf("%d results for %d items", n, to-from)
	}
	// A worker publishes its counts when it next waits for work, a moment
	// after its last result went out.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		s := p.Stats()
		if s.Completed+s.Failed == s.Submitted && s.InFlight == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("Stats not settled 10s after the last result: %+v", s)
			return
		}
	}
}
