package statepipe

import (
	"sync/atomic"
	"time"
)

// FlushReason says what made a batch flush.
type FlushReason int

const (
	FlushSize     FlushReason = iota // it held MaxItems requests
	FlushBytes                       // its data reached MaxBytes
	FlushLinger                      // MaxWait passed since its first request
	FlushIdle                        // nothing left running could join it
	FlushShutdown                    // the Pipelines were closing
	numFlushReasons
)

var flushReasonNames = [numFlushReasons]string{"size", "bytes", "linger", "idle", "shutdown"}

func (r FlushReason) String() string {
	if r < 0 || r >= numFlushReasons {
		return "unknown"
	}
	return flushReasonNames[r]
}

// BatchStats is a snapshot of what a Batcher has done.
type BatchStats struct {
	Name      string
	Flushes   [numFlushReasons]uint64 // flushes by reason: Flushes[FlushSize]...
	Items     uint64                  // requests flushed
	Failed    uint64                  // requests a flush failed (its error, or their own)
	Cancelled uint64                  // requests whose context ended while parked
	Retries   uint64                  // of the failed, requests that joined a later batch after a backoff (Retry)
	Parked    int                     // requests parked now
	MeanFill  float64                 // average requests per flush
	ParkTime  Durations               // from Add until the flush ended (or the context did)
	FlushTime Durations               // duration of the flush calls

	// Warning says why the Pipelines cap this batcher, if they do: an
	// in-flight bound (WithMaxInFlight) below MaxItems x MaxFlushes.
	Warning string
}

// TotalFlushes returns the number of flushes for every reason.
func (s BatchStats) TotalFlushes() uint64 {
	var n uint64
	for _, f := range s.Flushes {
		n += f
	}
	return n
}

// Stats returns a snapshot of the batcher's counters.
func (b *Batcher[T]) Stats() BatchStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := &b.counters
	s := BatchStats{
		Name:      b.cfg.name,
		Flushes:   c.flushes,
		Items:     c.items,
		Failed:    c.failed,
		Cancelled: c.cancelled,
		Retries:   c.retried,
		Parked:    c.holding(),
		ParkTime:  c.park.durations(),
		FlushTime: c.flush.durations(),
		Warning:   b.warning,
	}
	if n := s.TotalFlushes(); n > 0 {
		s.MeanFill = float64(c.items) / float64(n)
	}
	return s
}

// batchCounters are guarded by the batcher's mutex, but for held, which
// the engine reads without it when it wonders whether it is idle.
type batchCounters struct {
	flushes                          [numFlushReasons]uint64
	parked, items, failed, cancelled uint64
	retried                          uint64
	park, flush                      localTiming
	held                             atomic.Int64 // parked, or in a flush under way
}

// holding returns the requests parked now, or in a flush under way.
func (c *batchCounters) holding() int { return int(c.held.Load()) }

// add counts a request parked.
func (c *batchCounters) add() {
	c.parked++
	c.held.Add(1)
}

// cancel counts a request whose context ended while parked.
func (c *batchCounters) cancel(parkedFor int64) {
	c.cancelled++
	c.held.Add(-1)
	c.parkedFor(parkedFor)
}

func (c *batchCounters) flushed(reason FlushReason, items, failed int, took time.Duration) {
	c.flushes[reason]++
	c.items += uint64(items)
	c.held.Add(-int64(items))
	c.failed += uint64(failed)
	c.flush.observe(int64(took))
}

// parkedFor records a member's park time, in nanoseconds.
func (c *batchCounters) parkedFor(ns int64) {
	c.park.observe(ns)
}

// batchIndex finds the open batch a request joins.
type batchIndex[T any] interface {
	get(data T, b *Batcher[T]) *batch[T] // the open batch for data's key, opened (b.newBatch) if needed
	del(bt *batch[T])                    // bt takes no more requests
}

// singleIndex is the index of an unkeyed batcher: one open batch.
type singleIndex[T any] struct{ open *batch[T] }

func (s *singleIndex[T]) get(_ T, b *Batcher[T]) *batch[T] {
	if s.open == nil {
		s.open = b.newBatch()
	}
	return s.open
}

func (s *singleIndex[T]) del(bt *batch[T]) {
	if s.open == bt {
		s.open = nil
	}
}

// keyedIndex keeps one open batch per key.
type keyedIndex[T any, K comparable] struct {
	key func(T) K
	m   map[K]*batch[T]
}

func (k *keyedIndex[T, K]) get(data T, b *Batcher[T]) *batch[T] {
	key := k.key(data)
	bt := k.m[key]
	if bt == nil {
		bt = b.newBatch()
		bt.key = key
		k.m[key] = bt
	}
	return bt
}

func (k *keyedIndex[T, K]) del(bt *batch[T]) {
	key := bt.key.(K)
	if k.m[key] == bt {
		delete(k.m, key)
	}
}
