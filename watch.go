package statepipe

import (
	"sync"
	"time"
)

// roomWatch tells Submits waiting on a full group that its consumer made
// room, when nothing else can.
//
// A result in Out's buffer is still held by its group, and the engine
// cannot see the consumer receive it: a receive from a buffered channel
// runs no code of ours. Most room is seen anyway, at the events that follow
// a receive: a delivery into Out (which finds len(Out) lower), or the
// group's forwarder completing a send into a full Out. But a Submit may
// wait on a group whose held results sit in Out's buffer while the rest
// stay inside the machine for long (a slow stage, a lingering batch).
// Such a group is watched: one goroutine per Pipelines counts the receives
// from Out of every watched group, after a pause that doubles from
// minWatch to maxWatch while nothing changes, and wakes a waiter of each
// group whose consumer took a result. Its cost is one wake-up per pause for all watched groups
// together, nothing for the waiting Submits themselves, and nothing at all
// while no Submit waits on a group holding results in Out.
type roomWatch[T any] struct {
	mu     sync.Mutex
	groups map[*Group[T]]int64 // watched groups, with the receives seen when watching began
	added  chan struct{}       // holds one wake-up: a group was added
	quit   chan struct{}       // closed by Close
}

const (
	minWatch = 20 * time.Microsecond
	maxWatch = 5 * time.Millisecond
)

func newRoomWatch[T any]() *roomWatch[T] {
	return &roomWatch[T]{groups: map[*Group[T]]int64{}, added: make(chan struct{}, 1), quit: make(chan struct{})}
}

// add watches g until no Submit waits on it. The receives counted are the fewest seen by any of the group's
// waiters, so that each waiter learns of the receives after its own look.
func (w *roomWatch[T]) add(g *Group[T]) {
	rcv := g.receives()
	w.mu.Lock()
	if seen, ok := w.groups[g]; !ok || rcv < seen {
		w.groups[g] = rcv
	}
	w.mu.Unlock()
	select {
	case w.added <- struct{}{}:
	default:
	}
}

// run is the watcher's goroutine; Close stops it with quit.
func (w *roomWatch[T]) run() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-w.added:
		case <-w.quit:
			return
		}
		for pause := minWatch; ; {
			timer.Reset(pause)
			select {
			case <-timer.C:
			case <-w.quit:
				return
			}
			changed, left := w.look()
			if left == 0 {
				break
			}
			if changed {
				pause = minWatch
			} else {
				pause = min(2*pause, maxWatch)
			}
		}
	}
}

// look wakes a waiter of every watched group whose consumer took a
// result, stops watching the groups nobody waits on any more, and returns
// whether any took one and how many are still watched. A group stays
// watched while it has waiters: the one woken may leave no room for the
// others, which wait for the next receive.
func (w *roomWatch[T]) look() (changed bool, left int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for g, seen := range w.groups {
		if g.room.waiters.Load() == 0 {
			delete(w.groups, g)
			continue
		}
		if rcv := g.receives(); rcv > seen {
			w.groups[g] = rcv
			g.room.signalNow()
			changed = true
		}
	}
	return changed, len(w.groups)
}
