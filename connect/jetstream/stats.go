package jetstream

import (
	"slices"
	"strings"
	"sync/atomic"

	"github.com/statepipe/statepipe/connect"
)

// Stats are what a [Source] did with the messages it fetched, over all
// its runs: the counts every connector reports ([connect.SourceStats],
// with Done counting acks), and JetStream's own.
type Stats struct {
	connect.SourceStats

	// InProgress counts the in-progress reports sent for messages held
	// long (a third of AckWait).
	InProgress uint64
	// Exhausted counts the dead letters made from the server's
	// max-deliveries advisories: messages whose last delivery was held by
	// a process that died (see the package doc). They are not counted
	// in DeadLettered, which counts this Source's own messages.
	Exhausted uint64
}

// Stats returns the Source's counts. It is safe to call at any time,
// also while Run runs.
func (s *Source[T]) Stats() Stats {
	c := &s.counters
	st := Stats{
		SourceStats: connect.SourceStats{
			Fetched:      c.fetched.Load(),
			Redelivered:  c.redelivered.Load(),
			Done:         c.acked.Load(),
			Retried:      c.retried.Load(),
			DeadLettered: c.deadLettered.Load(),
			DecodeFailed: c.decodeFailed.Load(),
			Released:     c.released.Load(),
			Published:    c.published.Load(),
			Duplicates:   c.duplicates.Load(),
			Held:         int(c.held.Load()),
			HeldBytes:    c.heldBytes.Load(),
			Lag:          -1,
		},
		InProgress: c.inProgress.Load(),
		Exhausted:  c.exhausted.Load(),
	}
	if l := s.lanes.Load(); l != nil {
		st.Lag, st.Partitions = l.stats()
	}
	return st
}

// SourceStats returns the counts every connector reports, for
// contrib/prometheus: the Source is a [connect.Reporter].
func (s *Source[T]) SourceStats() connect.SourceStats { return s.Stats().SourceStats }

var _ connect.Reporter = (*Source[int])(nil)

type counters struct {
	fetched, redelivered, acked, retried, deadLettered, decodeFailed atomic.Uint64
	released, inProgress, published, duplicates, exhausted           atomic.Uint64
	held, heldBytes                                                  atomic.Int64
}

// laneSet is what Stats reads of a run's lanes: a copy made when they
// change.
type laneSet struct {
	lanes       []*lane
	partitioned bool
}

func (ls *laneSet) stats() (lag int64, parts []connect.PartitionStats) {
	lag = -1
	for _, l := range ls.lanes {
		ll := l.lag.Load()
		if ll >= 0 {
			lag = max(lag, 0) + ll
		}
		if ls.partitioned {
			parts = append(parts, connect.PartitionStats{Name: l.name, Lag: ll, Held: int(l.held.Load())})
		}
	}
	slices.SortFunc(parts, func(a, b connect.PartitionStats) int { return strings.Compare(a.Name, b.Name) })
	return lag, parts
}
