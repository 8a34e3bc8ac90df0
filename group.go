package statepipe

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Group is one caller's stream through shared Pipelines: what it submits
// comes back only on its own Out. Groups are independent: a group whose
// consumer stops reading blocks only its own Submit.
//
// To stop early, cancel the context you submitted with (the requests still
// inside then finish with its error) and Close the group; results not yet
// received stay in Out's buffer and are dropped with the group. Nothing
// waits for a consumer that went away.
type Group[T any] struct {
	p       *Pipelines[T]
	out     chan Request[T] // buffered to limit, so delivery never blocks
	limit   int64
	pending lifecycle // admitted, not yet in out; drained closes out
	room    wakeup    // a delivery wakes a Submit waiting for room

	id        uint64                     // unique within the Pipelines
	pause     atomic.Pointer[time.Timer] // a waiting Submit's timer, kept for the next: waiting allocates nothing
	submitted atomic.Uint64              // requests accepted: the next submission position
	done      chan struct{}              // closed by Close: wakes blocked Submits
	once      sync.Once

	// Ordered groups only: results wait in ring, at seq % limit, until
	// every earlier one has gone to out.
	ordered bool
	mu      sync.Mutex
	next    uint64 // next position to release; guarded by mu
	ring    []Request[T]
	ready   []bool
}

// NewGroup returns a new group. On closed Pipelines it returns a closed
// group: Submit returns ErrClosed and Out is closed.
func (p *Pipelines[T]) NewGroup(opts ...GroupOption) *Group[T] {
	gc := groupConfig{ordered: p.cfg.ordered, maxInFlight: p.cfg.maxInFlight}
	for _, o := range opts {
		if o != nil {
			o.applyGroup(&gc)
		}
	}
	limit := min(max(gc.maxInFlight, 1), p.cfg.maxInFlight)
	g := &Group[T]{
		p:       p,
		id:      p.groupIDs.Add(1),
		out:     make(chan Request[T], limit),
		limit:   int64(limit),
		done:    make(chan struct{}),
		room:    newWakeup(),
		ordered: gc.ordered,
	}
	g.pending.drained = func() {
		close(g.out)
		p.unregister(g)
	}
	if g.ordered {
		g.ring = make([]Request[T], limit)
		g.ready = make([]bool, limit)
	}
	if !p.register(g) {
		g.Close()
	}
	return g
}

// Submit sends data into the machine as a new request with context ctx.
// It blocks while the group's or the Pipelines' in-flight bound is reached,
// and returns ctx's error if ctx ends first, or ErrClosed if the group or
// the Pipelines are closed. Once Submit returns nil, the request comes out
// of Out exactly once. Submit is safe for concurrent use; requests
// submitted concurrently have no order among themselves.
func (g *Group[T]) Submit(ctx context.Context, data T) error {
	if ctx == nil {
		return ErrNilContext
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := g.admit(ctx); err != nil {
		return err
	}
	if err := g.p.admit(ctx, g.done); err != nil {
		g.pending.done(1)
		g.room.signal() // the place is free again
		return err
	}
	// Nothing fails from here on, so submission positions have no holes,
	// which the ordered release relies on.
	seq := g.submitted.Add(1) - 1
	r := Request[T]{Ctx: ctx, Data: data, Next: g.p.start, group: g, seq: seq, from: nodeIn}
	if timed(seq) || g.p.obs != nil {
		r.queued = clock() // this one is timed; see Stats
	}
	g.p.in <- r // never blocks: in has room for every request inside
	return nil
}

// admit takes a place in the group. A place is freed when the consumer
// receives from Out, and a receive from a channel cannot be observed. So a
// full group waits for the next delivery of one of its requests (the
// consumer usually receives soon after one) or for a pause that grows from
// 20µs to 1ms, whichever comes first, and looks again.
func (g *Group[T]) admit(ctx context.Context) error {
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
			g.pause.CompareAndSwap(nil, t) // keep it for the next wait
		}
	}()
	pause := 20 * time.Microsecond
	for {
		ok, closed := g.pending.add(g.buffered, g.limit)
		if ok {
			if g.hasRoom() {
				g.room.signal() // room is left for the next waiter
			}
			return nil
		}
		if closed {
			return ErrClosed
		}
		if t == nil {
			if t = g.pause.Swap(nil); t == nil {
				t = time.NewTimer(pause)
			}
		}
		t.Reset(pause)
		if err := g.room.wait(ctx, g.hasRoom, t.C, g.done, g.p.closing); err != nil {
			return err
		}
		pause = min(2*pause, time.Millisecond)
	}
}

// buffered is the number of results in out, not yet received.
func (g *Group[T]) buffered() int64 { return int64(len(g.out)) }

// hasRoom reports whether Submit could take a place now.
func (g *Group[T]) hasRoom() bool { return g.pending.count()+g.buffered() < g.limit }

// Out returns the channel of finished requests: each with Err nil, or the
// error that stopped it, and Next nil. It is closed after Close (of the
// group or of the Pipelines) once the last result is in it.
func (g *Group[T]) Out() <-chan Request[T] { return g.out }

// Close marks the end of the group's input: Submit returns ErrClosed from
// now on. Requests already submitted still come out; Out closes after the
// last. Close never waits for the consumer, and calling it again does
// nothing.
func (g *Group[T]) Close() {
	g.once.Do(func() {
		close(g.done)
		g.pending.close()
	})
}

// deliver puts finished requests into out: at once, or for an ordered
// group once every earlier submission is out. out has room: at most limit
// requests are admitted and not yet received. The count of pending
// requests drops once for all of them, after the last is in out.
func (g *Group[T]) deliver(rs ...Request[T]) {
	released := int64(len(rs))
	if !g.ordered {
		for i := range rs {
			g.out <- rs[i]
		}
	} else {
		released = 0
		g.mu.Lock()
		n := uint64(len(g.ring))
		for i := range rs {
			seq := rs[i].seq
			g.ring[seq%n], g.ready[seq%n] = rs[i], true
		}
		for i := g.next % n; g.ready[i]; i = g.next % n {
			g.out <- g.ring[i]
			g.ring[i], g.ready[i] = Request[T]{}, false
			g.next++
			released++
		}
		g.mu.Unlock()
	}
	if released > 0 {
		g.pending.done(released)
		g.room.signal()
	}
}

func (g *Group[T]) stats() GroupStats {
	return GroupStats{
		ID:        g.id,
		Ordered:   g.ordered,
		Limit:     int(g.limit),
		Submitted: g.submitted.Load(),
		Pending:   int(g.pending.count()),
		Buffered:  len(g.out),
	}
}
