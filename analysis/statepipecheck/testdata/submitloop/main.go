// Package submitloop submits many items and reads the results, in ways
// that hang and ways that do not.
package submitloop

import (
	"context"
	"sync"

	"github.com/statepipe/statepipe"
)

// Hangs submits everything, then reads: past the bound Submit waits for
// a reader that only comes after the loop.
func Hangs(ctx context.Context, p *statepipe.Pipelines[int], items []int) int {
	g := p.NewGroup()
	for _, it := range items {
		_ = g.Submit(ctx, it) // want `g\.Submit in a loop before g\.Out is read in the same goroutine: Submit blocks for good once MaxInFlight results wait unread; use Pipelines\.Do, or read g\.Out in another goroutine`
	}
	g.Close()
	n := 0
	for range g.Out() {
		n++
	}
	return n
}

// HangsOnOneReceive submits in a counted loop larger than the bound set.
func HangsOnOneReceive(ctx context.Context, m statepipe.StateMachine[int]) int {
	p, _ := statepipe.New(m, statepipe.WithMaxInFlight(10))
	defer p.Close()
	g := p.NewGroup()
	for i := 0; i < 100; i++ {
		_ = g.Submit(ctx, i) // want `g\.Submit in a loop before g\.Out is read`
	}
	r := <-g.Out()
	return r.Data
}

// Do is the one call for request/response: fine.
func Do(ctx context.Context, p *statepipe.Pipelines[int], items []int) int {
	n := 0
	for _, r := range p.Do(ctx, items...) {
		if r.Err == nil {
			n++
		}
	}
	return n
}

// Reader reads in a goroutine while the loop submits: fine.
func Reader(ctx context.Context, p *statepipe.Pipelines[int], items []int) int {
	g := p.NewGroup()
	var wg sync.WaitGroup
	n := 0
	wg.Go(func() {
		for range g.Out() {
			n++
		}
	})
	for _, it := range items {
		_ = g.Submit(ctx, it)
	}
	g.Close()
	wg.Wait()
	return n
}

// Producer submits in a goroutine and the caller reads: fine.
func Producer(ctx context.Context, p *statepipe.Pipelines[int], items []int) int {
	g := p.NewGroup()
	go func() {
		defer g.Close()
		for _, it := range items {
			_ = g.Submit(ctx, it)
		}
	}()
	n := 0
	for range g.Out() {
		n++
	}
	return n
}

// OutChannel hands the channel to a reader goroutine: fine.
func OutChannel(ctx context.Context, p *statepipe.Pipelines[int], items []int) {
	g := p.NewGroup()
	out := g.Out()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range out {
		}
	}()
	for _, it := range items {
		_ = g.Submit(ctx, it)
	}
	g.Close()
	<-done
}

// Lockstep receives each result in the loop: fine.
func Lockstep(ctx context.Context, p *statepipe.Pipelines[int], items []int) {
	g := p.NewGroup()
	for _, it := range items {
		_ = g.Submit(ctx, it)
		<-g.Out()
	}
	g.Close()
}

// Few submits fewer items than the default bound holds: fine.
func Few(ctx context.Context, p *statepipe.Pipelines[int]) int {
	g := p.NewGroup()
	for i := range 300 {
		_ = g.Submit(ctx, i)
	}
	g.Close()
	n := 0
	for range g.Out() {
		n++
	}
	return n
}

// Consumer hands the group to a reader goroutine: fine.
func Consumer(ctx context.Context, p *statepipe.Pipelines[int], items []int) {
	g := p.NewGroup()
	done := make(chan int)
	go count(g, done)
	for _, it := range items {
		_ = g.Submit(ctx, it)
	}
	g.Close()
	for range g.Out() { // never reached with results left: count drained them
	}
	<-done
}

func count(g *statepipe.Group[int], done chan<- int) {
	n := 0
	for range g.Out() {
		n++
	}
	done <- n
}
