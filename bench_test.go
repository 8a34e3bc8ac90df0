package statepipe

import (
	"context"
	"runtime"
	"sync"
	"testing"

	"github.com/statepipe/statepipe/internal/benchkit"
)

// The workloads are those of shared/bench/WORKLOADS.md; every one runs the
// hand-written baselines in the same run so that ratios can be read off.

// item is the W1 payload: each stage adds one to n. key is for the keyed
// variant (WithKey), which gives 1,000 keys round-robin.
type item struct{ n, key int }

func itemKey(it item) int { return it.key }

func addOne(it item) item { it.n++; return it }

// w1Machine names its next stages with values made once (zero allocation).
type w1Machine struct{ b, c, d Stage[item] }

func newW1Machine() *w1Machine {
	m := &w1Machine{}
	m.b, m.c, m.d = m.B, m.C, m.D
	return m
}

func (m *w1Machine) Start(r Request[item]) Request[item] {
	r.Data = addOne(r.Data)
	r.Next = m.b
	return r
}
func (m *w1Machine) B(r Request[item]) Request[item] { r.Data = addOne(r.Data); r.Next = m.c; return r }
func (m *w1Machine) C(r Request[item]) Request[item] { r.Data = addOne(r.Data); r.Next = m.d; return r }
func (m *w1Machine) D(r Request[item]) Request[item] { r.Data = addOne(r.Data); return r }
func (m *w1Machine) Close()                          {}

// w1MethodValues names its next stages with method values built in the
// stage: the natural spelling, one allocation per transition.
type w1MethodValues struct{}

func (m *w1MethodValues) Start(r Request[item]) Request[item] {
	r.Data = addOne(r.Data)
	r.Next = m.B
	return r
}
func (m *w1MethodValues) B(r Request[item]) Request[item] {
	r.Data = addOne(r.Data)
	r.Next = m.C
	return r
}
func (m *w1MethodValues) C(r Request[item]) Request[item] {
	r.Data = addOne(r.Data)
	r.Next = m.D
	return r
}
func (m *w1MethodValues) D(r Request[item]) Request[item] { r.Data = addOne(r.Data); return r }
func (m *w1MethodValues) Close()                          {}

// perItem reports ns/item, allocs/item and B/item for items processed b.N
// times.
func perItem(b *testing.B, items int, run func()) { benchkit.PerItem(b, items, run) }

const w1Items = 1_000_000

func BenchmarkW1(b *testing.B) {
	stages := []func(item) item{addOne, addOne, addOne, addOne}
	b.Run("statepipe", func(b *testing.B) { benchStatepipeW1(b, newW1Machine(), w1Items) })
	b.Run("statepipe-method-values", func(b *testing.B) { benchStatepipeW1(b, &w1MethodValues{}, w1Items) })
	b.Run("statepipe-observer", func(b *testing.B) {
		// A no-op Observer: every stage run is timed and every event built.
		p, err := New[item](newW1Machine(), WithObserver(ObserverFunc(func(Event) {})))
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		benchStatepipeW1With(b, p, w1Items)
	})
	b.Run("statepipe-keyed", func(b *testing.B) {
		// 1,000 keys: each request waits for the one before it with its key.
		p, err := New[item](newW1Machine(), WithKey(itemKey))
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		benchStatepipeW1With(b, p, w1Items)
	})
	b.Run("limit", func(b *testing.B) { perItem(b, w1Items, func() { limitPipeline(w1Items, stages) }) })
	b.Run("limit-sm", func(b *testing.B) { perItem(b, w1Items, func() { limitStateMachine(w1Items, newW1Machine()) }) })
	b.Run("classic", func(b *testing.B) { perItem(b, w1Items, func() { classicPipeline(w1Items, stages) }) })
}

func benchStatepipeW1(b *testing.B, sm StateMachine[item], items int) {
	p, err := New(sm)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	benchStatepipeW1With(b, p, items)
}

func benchStatepipeW1With(b *testing.B, p *Pipelines[item], items int) {
	perItem(b, items, func() {
		g := p.NewGroup()
		go func() {
			ctx := context.Background()
			for i := range items {
				if err := g.Submit(ctx, item{key: i % 1000}); err != nil {
					panic(err)
				}
			}
			g.Close()
		}()
		for r := range g.Out() {
			if r.Data.n != 4 {
				b.Fatalf("item came out with %d, want 4", r.Data.n)
			}
		}
	})
}

// limitPipeline is the cost floor of handing items to workers and back:
// P goroutines pull from one input channel and call the stages in turn.
func limitPipeline(items int, stages []func(item) item) {
	in, out := make(chan item, 256), make(chan item, 256)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range in {
				for _, s := range stages {
					it = s(it)
				}
				out <- it
			}
		}()
	}
	go func() {
		for range items {
			in <- item{}
		}
		close(in)
		wg.Wait()
		close(out)
	}()
	for it := range out {
		if it.n != len(stages) {
			panic("limit baseline lost a stage")
		}
	}
}

// classicPipeline is the textbook pipeline: per lane, a goroutine per stage
// with channels between; P lanes fanned out and in.
func classicPipeline(items int, stages []func(item) item) {
	lanes := runtime.GOMAXPROCS(0)
	in, out := make(chan item, 256), make(chan item, 256)
	var wg sync.WaitGroup
	for range lanes {
		c := in
		for _, s := range stages {
			next := make(chan item)
			go func(s func(item) item, from <-chan item, to chan<- item) {
				for it := range from {
					to <- s(it)
				}
				close(to)
			}(s, c, next)
			c = next
		}
		wg.Add(1)
		go func(from <-chan item) {
			defer wg.Done()
			for it := range from {
				out <- it
			}
		}(c)
	}
	go func() {
		for range items {
			in <- item{}
		}
		close(in)
		wg.Wait()
		close(out)
	}()
	for it := range out {
		if it.n != len(stages) {
			panic("classic baseline lost a stage")
		}
	}
}
