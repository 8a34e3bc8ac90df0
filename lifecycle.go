package statepipe

import (
	"context"
	"sync/atomic"
	"time"
)

// lifecycle counts work in progress for an owner that can be closed: once
// closed, nothing more is added, and drained runs exactly once, when the
// count reaches zero. Pipelines use it for requests inside the machine,
// groups for requests not yet in their output.
type lifecycle struct {
	state   atomic.Int64 // closedBit | count
	drained func()
}

const closedBit = 1 << 62

// add counts one more unit of work unless closed or count+used() would
// reach limit. used is read after the count, so that work moving from the
// count to what used measures (a result going into a group's buffer: sent
// first, uncounted second) is never missed, only counted twice for a
// moment. It reports whether it counted, and whether the owner is closed.
func (l *lifecycle) add(used func() int64, limit int64) (ok, closed bool) {
	for {
		s := l.state.Load()
		if s&closedBit != 0 {
			return false, true
		}
		if s+used() >= limit {
			return false, false
		}
		if l.state.CompareAndSwap(s, s+1) {
			return true, false
		}
	}
}

// done uncounts n units of work.
func (l *lifecycle) done(n int64) {
	if l.state.Add(-n) == closedBit {
		l.drained()
	}
}

// close stops further adds; drained runs now if nothing is counted.
// It reports whether this call closed it.
func (l *lifecycle) close() bool {
	for {
		s := l.state.Load()
		if s&closedBit != 0 {
			return false
		}
		if l.state.CompareAndSwap(s, s|closedBit) {
			if s == 0 {
				l.drained()
			}
			return true
		}
	}
}

// count returns the work in progress.
func (l *lifecycle) count() int64 { return l.state.Load() &^ closedBit }

// closed reports whether close has been called.
func (l *lifecycle) closed() bool { return l.state.Load()&closedBit != 0 }

// wakeup lets goroutines wait for room that others free, without a lock
// on the path that frees it: signal costs one atomic load when nobody waits.
type wakeup struct {
	waiters atomic.Int32
	ch      chan struct{} // holds at most one pending wake-up
}

func newWakeup() wakeup { return wakeup{ch: make(chan struct{}, 1)} }

// wait blocks until room() is true, a wake-up arrives, timeout fires (nil:
// never), ctx ends, or one of stop closes. The caller re-checks for room
// after it returns nil.
func (w *wakeup) wait(ctx context.Context, room func() bool, timeout <-chan time.Time, stop, stop2 <-chan struct{}) error {
	w.waiters.Add(1)
	defer w.waiters.Add(-1)
	// Registered first, checked second: a signal sent after this check
	// sees the waiter and leaves a wake-up in ch.
	if room() {
		return nil
	}
	select {
	case <-w.ch:
		return nil
	case <-timeout:
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
