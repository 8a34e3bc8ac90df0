package statepipe

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
)

// Group is one caller's stream through shared Pipelines: what it submits
// comes back only on its own Out. Groups are independent: a group whose
// consumer stops reading blocks only its own Submit.
//
// A group costs what it holds, not its bound: about 2 KiB and a handful of
// allocations when made, and the results it holds as they come.
type Group[T any] struct {
	p       *Pipelines[T]
	id      uint64 // unique within the Pipelines
	limit   int64
	ordered bool
	out     chan Request[T] // Out; buffers min(limit, outBuffer) results

	// Places in the group (see closedBit): admitted counts places taken,
	// returned those given back by Submits that failed after taking one,
	// sent the results put into out (or dropped by Discard). A result
	// still in out's buffer is held; so the group holds
	// admitted - returned - sent + len(out).
	admitted atomic.Int64
	returned atomic.Int64
	sent     atomic.Int64
	room     wakeup // a delivery or a receive seen wakes a Submit waiting for room
	seqs     atomic.Uint64

	// Set by tests only, to force the interleavings admission must
	// survive: betweenReads runs in heldAt between its reads, beforeWait
	// in waitRoom before the caller counts as a waiter.
	betweenReads, beforeWait func()

	done      chan struct{} // closed by Close: wakes blocked Submits
	closeOnce sync.Once
	finished  atomic.Bool // out is closed
	discarded atomic.Bool

	mu      sync.Mutex
	q       outQueue[T]  // results on their way to out; guarded by mu
	sending atomic.Int64 // results a forwarder took from q and has not put into out yet

	// The Pipelines' list of open groups; guarded by the Pipelines' mu.
	prev, next *Group[T]
	listed     bool

	// Do's groups deliver into sink, by position, instead of out.
	sink     []Request[T]
	owed     atomic.Int64
	sinkDone chan struct{}
}

// outBuffer is the most results Out's channel buffers. A group with a
// larger bound keeps the rest in memory behind it as they come, and
// moves them into Out with a goroutine of its own while there are any.
const outBuffer = 16

// NewGroup returns a new group. On closed Pipelines it returns a closed
// group: Submit returns ErrClosed and Out is closed.
func (p *Pipelines[T]) NewGroup(opts ...GroupOption) *Group[T] {
	gc := groupConfig{ordered: p.cfg.ordered, maxInFlight: p.cfg.maxInFlight}
	for _, o := range opts {
		if o != nil {
			gc = o.applyGroup(gc)
		}
	}
	limit := min(max(gc.maxInFlight, 1), p.cfg.maxInFlight)
	g := &Group[T]{
		p:       p,
		id:      p.groupIDs.Add(1),
		out:     make(chan Request[T], min(limit, outBuffer)),
		limit:   int64(limit),
		done:    make(chan struct{}),
		room:    newWakeup(),
		ordered: gc.ordered,
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
//
// A blocked Submit costs no CPU while it waits. It wakes when the
// consumer makes room: at once if the group has results waiting behind
// Out's buffer, otherwise within a pause that grows from 20µs to 5ms while
// the consumer takes nothing (one goroutine per Pipelines watches for
// that, whatever the number of groups and waiters; see Group.Out).
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
	id, err := g.p.admit(ctx, g.done)
	if err != nil {
		g.giveBack()
		return err
	}
	var seq uint64
	if g.ordered {
		// Positions are given after both admissions, so they have no
		// holes, which the ordered release relies on.
		seq = g.seqs.Add(1) - 1
	}
	g.p.enqueue(g, ctx, data, id, seq)
	return nil
}

// admit takes a place in the group.
func (g *Group[T]) admit(ctx context.Context) error {
	for {
		a := g.admitted.Load()
		if a&closedBit != 0 {
			return ErrClosed
		}
		if g.heldAt(a) < g.limit {
			if !g.admitted.CompareAndSwap(a, a+1) {
				continue
			}
			if g.room.waiters.Load() > 0 && g.heldAt(a+1) < g.limit {
				g.room.signalNow() // room is left for the next waiter
			}
			return nil
		}
		if err := g.waitRoom(ctx); err != nil {
			return err
		}
	}
}

// heldAt returns how many results the group holds if a places are taken:
// admitted and not yet received. Reading sent before len(out) errs on the
// side of holding more, never less: a result is counted in sent only after
// it is in out.
func (g *Group[T]) heldAt(a int64) int64 {
	sent := g.sent.Load()
	if g.betweenReads != nil {
		g.betweenReads()
	}
	return a&^closedBit - g.returned.Load() - (sent - int64(len(g.out)))
}

// receives returns a count of the results the consumer has received: never
// more than it has, so that it only grows when the consumer takes one
// (deliveries raise sent and len(out) alike).
func (g *Group[T]) receives() int64 {
	sent := g.sent.Load()
	return sent - int64(len(g.out))
}

// hasRoom reports whether Submit could take a place now.
func (g *Group[T]) hasRoom() bool { return g.heldAt(g.admitted.Load()) < g.limit }

// waitRoom waits until the group may have room. The results the group
// holds in Out's buffer leave it unseen; if there are any once the caller
// counts as a waiter, the group is watched for them (see roomWatch). A
// consumer that is reading takes one within microseconds, so the waiter
// first yields a few times before it sleeps: timers on some machines do
// not fire sooner than a millisecond.
func (g *Group[T]) waitRoom(ctx context.Context) error {
	if len(g.out) > 0 {
		for range spinYields {
			runtime.Gosched()
			if g.hasRoom() {
				return nil
			}
		}
	}
	if g.beforeWait != nil {
		g.beforeWait()
	}
	return g.room.wait(ctx, g.hasRoom, g.watchIfHolding, g.done, g.p.closing)
}

// spinYields is how many times a Submit yields for a consumer that is
// reading before it waits.
const spinYields = 16

// watchIfHolding asks the room watcher to watch g if it holds results in
// Out's buffer.
func (g *Group[T]) watchIfHolding() {
	if len(g.out) > 0 {
		g.p.watch.add(g)
	}
}

// giveBack returns the place of a Submit that failed after taking one.
func (g *Group[T]) giveBack() {
	g.returned.Add(1)
	g.room.signal()
	g.maybeFinish()
}

// Out returns the channel of finished requests: each with Err nil, or the
// error that stopped it, and Next nil. It is closed after Close (of the
// group or of the Pipelines) once the last result is in it.
//
// Out's channel buffers up to 16 results. A group whose bound is larger
// keeps the results its consumer has not taken yet behind it, in memory
// that grows and shrinks with them, and one goroutine moves them into Out
// while there are any. That goroutine ends when they are received, so a
// consumer that stops reading a large group early should Discard it, or
// the goroutine waits for it (also after Pipelines.Close).
func (g *Group[T]) Out() <-chan Request[T] { return g.out }

// Close marks the end of the group's input: Submit returns ErrClosed from
// now on. Requests already submitted still come out; Out closes after the
// last. Close never waits for the consumer, and calling it again does
// nothing.
func (g *Group[T]) Close() {
	g.closeOnce.Do(func() {
		for {
			a := g.admitted.Load()
			if g.admitted.CompareAndSwap(a, a|closedBit) {
				break
			}
		}
		close(g.done)
		g.maybeFinish()
	})
}

// Discard is for a consumer that stops reading before Out closes: it
// closes the group, as Close does, and drops every result not yet
// received: those in Out's buffer, those waiting behind it, and those of
// requests still inside the machine, as they finish (cancel their context
// to make them finish sooner). Out closes once the last is dropped. After
// Discard nothing of the group waits for its consumer.
func (g *Group[T]) Discard() {
	g.Close()
	if g.discarded.Swap(true) {
		return
	}
	g.mu.Lock()
	dropped := g.q.discard()
	g.mu.Unlock()
	g.delivered(dropped, false)
	g.drainOut()
}

// drainOut takes what a consumer that left has not from out. That also
// makes room for the one result a forwarder may be sending, so that it
// ends.
func (g *Group[T]) drainOut() {
	for {
		select {
		case _, ok := <-g.out:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

// maybeFinish closes out once the group is closed and every result
// admitted is in it (or dropped). Whoever makes the last of those changes
// calls it: all counters only grow, so it cannot see the end early.
func (g *Group[T]) maybeFinish() {
	a := g.admitted.Load()
	if a&closedBit == 0 || a&^closedBit-g.returned.Load()-g.sent.Load() != 0 {
		return
	}
	if g.finished.CompareAndSwap(false, true) {
		close(g.out)
		g.p.unregister(g)
	}
}

// groupList is an intrusive list of groups: adding and removing one costs
// no allocation and no hashing, which matters to a group per call.
type groupList[T any] struct {
	head *Group[T]
	n    int
}

func (l *groupList[T]) add(g *Group[T]) {
	g.next, g.listed = l.head, true
	if l.head != nil {
		l.head.prev = g
	}
	l.head = g
	l.n++
}

func (l *groupList[T]) remove(g *Group[T]) {
	if !g.listed {
		return
	}
	if g.prev != nil {
		g.prev.next = g.next
	} else {
		l.head = g.next
	}
	if g.next != nil {
		g.next.prev = g.prev
	}
	g.prev, g.next, g.listed = nil, nil, false
	l.n--
}

// all returns the groups listed, oldest first.
func (l *groupList[T]) all() []*Group[T] {
	out := make([]*Group[T], 0, l.n)
	for g := l.head; g != nil; g = g.next {
		out = append(out, g)
	}
	slices.Reverse(out)
	return out
}

func (g *Group[T]) stats() GroupStats {
	g.mu.Lock()
	behind := g.q.backlog.Len() + g.q.waiting.Len() + int(g.sending.Load())
	g.mu.Unlock()
	submitted := g.admitted.Load()&^closedBit - g.returned.Load()
	return GroupStats{
		ID:        g.id,
		Ordered:   g.ordered,
		Limit:     int(g.limit),
		Submitted: uint64(submitted),
		Pending:   int(max(0, submitted-g.sent.Load()-int64(behind))),
		Buffered:  len(g.out) + behind,
	}
}
