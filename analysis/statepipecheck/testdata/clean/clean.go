// Package clean uses statepipe the documented way: statepipevet finds
// nothing in it.
package clean

import (
	"context"
	"errors"
	"time"

	"github.com/statepipe/statepipe"
)

type Order struct {
	ID     int
	Amount int
	Stored bool
}

type Ingest struct {
	bulk *statepipe.Batcher[Order]
	done statepipe.Stage[Order] // the next stage, made once
}

func NewIngest() *Ingest {
	in := &Ingest{}
	in.done = in.Done
	in.bulk = statepipe.NewBatcher(func(ctx context.Context, batch []statepipe.Request[Order]) error {
		for i := range batch {
			batch[i].Data.Stored = true
		}
		return nil
	}, statepipe.MaxItems(100), statepipe.MaxWait(10*time.Millisecond))
	return in
}

func (in *Ingest) Start(r statepipe.Request[Order]) statepipe.Request[Order] {
	if r.Data.Amount <= 0 {
		r.Err = errors.New("empty order")
		return r
	}
	r.Next = in.done
	return in.bulk.Add(r)
}

func (in *Ingest) Done(r statepipe.Request[Order]) statepipe.Request[Order] { return r }

func (in *Ingest) Close() {}

// Run submits from one goroutine and reads in another.
func Run(ctx context.Context, n int) (stored int, err error) {
	p, err := statepipe.New[Order](NewIngest())
	if err != nil {
		return 0, err
	}
	defer p.Close()
	g := p.NewGroup()
	go func() {
		defer g.Close()
		for i := range n {
			if g.Submit(ctx, Order{ID: i, Amount: 1}) != nil {
				return
			}
		}
	}()
	for r := range g.Out() {
		if r.Err == nil && r.Data.Stored {
			stored++
		}
	}
	return stored, nil
}

// Handle is request/response: one call.
func Handle(ctx context.Context, p *statepipe.Pipelines[Order], orders []Order) []error {
	var errs []error
	for _, r := range p.Do(ctx, orders...) {
		errs = append(errs, r.Err)
	}
	return errs
}
