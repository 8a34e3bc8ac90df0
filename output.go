package statepipe

import "github.com/statepipe/statepipe/internal/ring"

// outQueue holds a group's results between the machine and out: those that
// wait for earlier ones (ordered groups), and those released while out's
// buffer was full (groups with a bound larger than outBuffer). Both grow
// and shrink with what they hold. Guarded by the group's mu.
type outQueue[T any] struct {
	waiting ring.Reorder[Request[T]] // ordered groups: by position, from next
	next    uint64                   // the position released next

	backlog    ring.Queue[Request[T]] // released, waiting for room in out
	forwarding bool                   // a forwarder is moving backlog into out
	dropping   bool                   // Discard was called: results are dropped
}

// put hands a finished request to the group, on whatever goroutine
// finishes it. It never blocks.
func (g *Group[T]) put(seq uint64, r Request[T]) {
	switch {
	case g.sink != nil:
		g.sink[seq] = r
		if g.owed.Add(-1) == 0 {
			close(g.sinkDone)
		}
	case g.ordered:
		g.mu.Lock()
		g.q.waiting.Set(int(seq-g.q.next), r)
		var sent int64
		start := false
		for {
			r, ok := g.q.waiting.Next()
			if !ok {
				break
			}
			g.q.next++
			s, st := g.release(r)
			sent += s
			start = start || st
		}
		g.mu.Unlock()
		g.delivered(sent, start)
	default:
		// Unordered: no lock when out has room, the common case.
		if !g.discarded.Load() {
			select {
			case g.out <- r:
				g.delivered(1, false)
				if g.discarded.Load() {
					// Discard ran meanwhile, and may have emptied out
					// before this send: empty it again, so that a
					// forwarder's send can end.
					g.drainOut()
				}
				return
			default:
			}
		}
		g.mu.Lock()
		sent, start := g.release(r)
		g.mu.Unlock()
		g.delivered(sent, start)
	}
}

// release moves r, next in line, towards out: into it if it has room and
// nothing is waiting for room before r, otherwise into the backlog. It
// returns how many results went into out (or were dropped), and whether a
// forwarder must be started for the backlog. g.mu is held.
func (g *Group[T]) release(r Request[T]) (sent int64, startForwarder bool) {
	if g.q.dropping {
		return 1, false
	}
	if !g.q.forwarding {
		select {
		case g.out <- r:
			return 1, false
		default:
		}
		g.q.forwarding = true
		startForwarder = true
	}
	g.q.backlog.Push(r)
	return 0, startForwarder
}

// delivered counts results put into out (after they are in it), wakes a
// Submit that may now see room, and starts the forwarder if asked to.
func (g *Group[T]) delivered(sent int64, startForwarder bool) {
	if sent > 0 {
		g.sent.Add(sent)
		g.room.signal()
		g.maybeFinish()
	}
	if startForwarder {
		go g.forward()
	}
}

// forward moves the backlog into out, one result at a time, blocking while
// out is full: its send completes when the consumer takes a result, which
// is how a full large group learns of room. It ends when the backlog is
// empty (Discard empties it, and takes from out what the forwarder is
// sending).
//
// It takes results from the backlog a handful at a time, one lock for
// all, and holds them (counted in g.sending) until each is in out.
func (g *Group[T]) forward() {
	var hand [forwardHand]Request[T]
	for {
		g.mu.Lock()
		n := 0
		for n < len(hand) {
			r, ok := g.q.backlog.Pop()
			if !ok {
				break
			}
			hand[n] = r
			n++
		}
		if n == 0 {
			g.q.forwarding = false
			g.mu.Unlock()
			return
		}
		g.sending.Store(int64(n))
		g.mu.Unlock()
		for i := range hand[:n] {
			if g.discarded.Load() {
				left := int64(n - i)
				clear(hand[i:n])
				g.sending.Store(0)
				g.delivered(left, false)
				break
			}
			g.out <- hand[i]
			hand[i] = Request[T]{}
			g.sending.Add(-1)
			g.delivered(1, false)
		}
	}
}

// forwardHand is how many results a forwarder takes from the backlog at
// once.
const forwardHand = 16

// discard makes the group drop its results from now on, and returns how
// many it dropped from its backlog. g.mu is held.
func (q *outQueue[T]) discard() (dropped int64) {
	q.dropping = true
	return int64(q.backlog.Reset())
}
