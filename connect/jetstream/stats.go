package jetstream

import "sync/atomic"

// SourceStats counts what a [Source] did with the messages it fetched,
// over all its runs.
type SourceStats struct {
	Fetched      uint64 // messages received from the consumer
	Redelivered  uint64 // of those, delivered before (to this process or another)
	Acked        uint64 // processed: acked after the request came out without error
	Retried      uint64 // naked with a delay after a retryable failure
	DeadLettered uint64 // termed after a permanent failure (and published to DeadLetter, if set)
	DecodeFailed uint64 // of those, rejected by Decode
	Released     uint64 // naked without delay by a drain, for another process to take
	InProgress   uint64 // in-progress reports sent for messages held long
	Published    uint64 // results the Sink published and the stream confirmed
	Duplicates   uint64 // of those, results the stream already had (a redelivered message's)
	Held         int    // messages held now: fetched, not yet settled
}

// Stats returns the Source's counts. It is safe to call at any time,
// also while Run runs.
func (s *Source[T]) Stats() SourceStats {
	c := &s.counters
	return SourceStats{
		Fetched:      c.fetched.Load(),
		Redelivered:  c.redelivered.Load(),
		Acked:        c.acked.Load(),
		Retried:      c.retried.Load(),
		DeadLettered: c.deadLettered.Load(),
		DecodeFailed: c.decodeFailed.Load(),
		Released:     c.released.Load(),
		InProgress:   c.inProgress.Load(),
		Published:    c.published.Load(),
		Duplicates:   c.duplicates.Load(),
		Held:         int(c.held.Load()),
	}
}

type counters struct {
	fetched, redelivered, acked, retried, deadLettered, decodeFailed atomic.Uint64
	released, inProgress, published, duplicates                      atomic.Uint64
	held                                                             atomic.Int64
}
