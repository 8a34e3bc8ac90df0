package statepipe

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/statepipe/statepipe/internal/benchkit"
)

// --- W6: tiny groups, the service pattern ------------------------------------
//
// A service handling requests opens a group per call, submits a few items,
// closes and drains it: the cost that matters is per group (per call), with
// default options, since that is what a handler writes first.

const (
	w6Groups     = 20_000
	w6PerGroup   = 4
	w6Submitters = 8
)

// w6Machine is W1's add-one machine cut to two stages; its next stage is a
// value made once, so the stages allocate nothing.
type w6Machine struct{ b Stage[item] }

func newW6Machine() *w6Machine {
	m := &w6Machine{}
	m.b = m.B
	return m
}

func (m *w6Machine) Start(r Request[item]) Request[item] {
	r.Data = addOne(r.Data)
	r.Next = m.b
	return r
}
func (m *w6Machine) B(r Request[item]) Request[item] { r.Data = addOne(r.Data); return r }
func (m *w6Machine) Close()                          {}

func BenchmarkW6(b *testing.B) {
	b.Run("statepipe", func(b *testing.B) {
		p := w6New(b)
		defer p.Close()
		w6Run(b, func() {
			// Default options on purpose: W6 measures what a handler gets
			// without tuning.
			g := p.NewGroup()
			ctx := context.Background()
			for range w6PerGroup {
				if err := g.Submit(ctx, item{}); err != nil {
					panic(err)
				}
			}
			g.Close()
			n := 0
			for r := range g.Out() {
				w6Check(r.Data, r.Err)
				n++
			}
			if n != w6PerGroup {
				panic("W6 group lost items")
			}
		})
	})
	b.Run("statepipe-do", func(b *testing.B) {
		p := w6New(b)
		defer p.Close()
		w6Run(b, func() {
			// An array on the stack: passing it as items... costs nothing.
			var items [w6PerGroup]item
			res := p.Do(context.Background(), items[:]...)
			if len(res) != w6PerGroup {
				panic("W6 Do lost items")
			}
			for _, r := range res {
				w6Check(r.Data, r.Err)
			}
		})
	})
	b.Run("baseline", func(b *testing.B) { w6Baseline(b) })
}

func w6New(b *testing.B) *Pipelines[item] {
	p, err := New[item](newW6Machine())
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// w6Check panics on a wrong result: the benchmark must do the whole job.
func w6Check(it item, err error) {
	if err != nil {
		panic(err)
	}
	if it.n != 2 {
		panic("W6 item lost a stage")
	}
}

// w6Run runs call w6Groups times per op from w6Submitters goroutines, and
// reports per group, plus ns/item.
func w6Run(b *testing.B, call func()) {
	benchkit.PerUnit(b, w6Groups, "group", func() {
		var wg sync.WaitGroup
		var next atomic.Int64
		for range w6Submitters {
			wg.Go(func() {
				for next.Add(1) <= w6Groups {
					call()
				}
			})
		}
		wg.Wait()
	})
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/(float64(w6Groups*w6PerGroup)*float64(b.N)), "ns/item")
}

// w6Job is one item for the baseline's workers, with the reply channel of
// the call it belongs to.
type w6Job struct {
	it    item
	reply chan item
}

// w6Baseline is the hand-written worker pool a service would use instead:
// P workers fed by one channel (buffered like the limit baseline's), each
// call making its own reply channel for its items.
func w6Baseline(b *testing.B) {
	in := make(chan w6Job, 256)
	var workers sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		workers.Go(func() {
			for j := range in {
				j.reply <- addOne(addOne(j.it))
			}
		})
	}
	defer func() {
		close(in)
		workers.Wait()
	}()
	w6Run(b, func() {
		// Buffered to the call's size, so a worker never waits for the caller.
		reply := make(chan item, w6PerGroup)
		for range w6PerGroup {
			in <- w6Job{reply: reply}
		}
		for range w6PerGroup {
			w6Check(<-reply, nil)
		}
	})
}
