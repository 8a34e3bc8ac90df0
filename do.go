package statepipe

import "context"

// Do runs items through the machine as one call and returns every item's
// result, in the order of items: the way to call statepipe from a request
// handler. It submits and collects at once, so it never hangs whatever the
// number of items; it blocks only while the Pipelines are full, like
// Submit. Each result is a Request with Err nil or the error that stopped
// it. Items not accepted come back with the reason in Err and their Data
// as given: ctx's error if ctx ends before they are let in, ErrClosed once
// the Pipelines close, ErrNilContext for a nil ctx.
//
// Do waits for every item it let in, also after ctx ends: those then come
// out quickly, with ctx's error, at their next stage or as soon as their
// batch drops them. It costs one allocation for the results and a few for
// its group; it must not be called from a stage of the same Pipelines (a
// stage waiting for room it holds itself may never get it).
func (p *Pipelines[T]) Do(ctx context.Context, items ...T) []Request[T] {
	results := make([]Request[T], len(items))
	if len(items) == 0 {
		return results
	}
	g := &Group[T]{p: p, id: p.groupIDs.Add(1), sink: results, sinkDone: make(chan struct{})}
	g.owed.Store(int64(len(items)))
	for i, data := range items {
		err := ErrNilContext
		var id uint64
		if ctx != nil {
			if err = ctx.Err(); err == nil {
				id, err = p.admit(ctx, nil)
			}
		}
		if err != nil {
			for j := i; j < len(items); j++ {
				results[j] = Request[T]{Ctx: ctx, Data: items[j], Err: err}
			}
			if g.owed.Add(-int64(len(items)-i)) == 0 {
				close(g.sinkDone)
			}
			break
		}
		p.enqueue(g, ctx, data, id, uint64(i))
	}
	<-g.sinkDone
	return results
}
