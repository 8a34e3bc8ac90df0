package statepipe

import (
	"context"
	"sync/atomic"
)

// Admission counts places with counters that only grow: places taken,
// places given back, results handed on. A check that reads them one after
// another, each at a different moment, can then only see less room than
// there is, never more, and a compare-and-swap on the count of places taken
// cannot succeed on a stale value (the ABA a count that goes up and down
// would allow). The count of places taken also carries closedBit once its
// owner closes, so that no place is taken after that.
const closedBit = 1 << 62

// paddedCount is a counter on a cache line of its own: the counts of
// places taken and given back are written by different goroutines
// (submitters and workers), which must not slow each other down.
type paddedCount struct {
	atomic.Int64
	_ [56]byte
}

// wakeup lets goroutines wait for room that others free, without a lock
// on the path that frees it: signal costs one atomic load when nobody waits.
type wakeup struct {
	waiters atomic.Int32
	ch      chan struct{} // holds at most one pending wake-up
}

func newWakeup() wakeup { return wakeup{ch: make(chan struct{}, 1)} }

// wait blocks until room() is true, a wake-up arrives, ctx ends, or one
// of stop closes. The caller re-checks for room
// after it returns nil. registered, if not nil, runs once the caller
// counts as a waiter, before room is checked: whatever it arranges to
// wake the waiter (a watch) cannot be missed.
func (w *wakeup) wait(ctx context.Context, room func() bool, registered func(), stop, stop2 <-chan struct{}) error {
	w.waiters.Add(1)
	defer w.waiters.Add(-1)
	if registered != nil {
		registered()
	}
	// Registered first, checked second: a signal sent after this check
	// sees the waiter and leaves a wake-up in ch.
	if room() {
		return nil
	}
	select {
	case <-w.ch:
		if err := ctx.Err(); err != nil {
			// Room and the end of ctx came together: this waiter gives
			// up, and passes the wake-up on to the next.
			w.signalNow()
			return err
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-stop:
		return ErrClosed
	case <-stop2:
		return ErrClosed
	}
}

// signal wakes a waiter, if there is one. ch holds one wake-up however
// many signals arrive, so a waiter that takes room while room is left over
// must signal again for the next waiter.
func (w *wakeup) signal() {
	if w.waiters.Load() > 0 {
		w.signalNow()
	}
}

func (w *wakeup) signalNow() {
	select {
	case w.ch <- struct{}{}:
	default: // a wake-up is already pending
	}
}
