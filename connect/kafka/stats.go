package kafka

import (
	"slices"
	"strings"
	"sync/atomic"

	"github.com/statepipe/statepipe/connect"
)

// Stats are what a [Source] did, over all its runs, and what it holds now.
type Stats struct {
	connect.SourceStats

	Committed    uint64 // partition offsets committed
	CommitFailed uint64 // partition offsets whose commit failed (a later commit carries them)
	Assigned     uint64 // partitions given to this member
	Revoked      uint64 // partitions taken away in a rebalance
	Lost         uint64 // partitions lost with the member's place in the group
	Paused       uint64 // times fetching of a full partition paused
	GivenBack    uint64 // polled records of full partitions handed back to the client, to be fetched again
	Transactions uint64 // transactions committed (TransactionalID)
	Aborted      uint64 // transactions aborted, whose records run again
}

// Stats returns the Source's counts and, while it runs, what it holds
// and the lag of each partition it owns. It is safe to call at any time.
// In connect.SourceStats, Done counts the records finished (successful or
// dead-lettered: committed or about to be), Retried the runs that failed
// and were run again by the Source, Released the records given up
// unfinished for the next owner, and Redelivered stays 0: Kafka does not
// tell a record read before from one read for the first time.
func (s *Source[T]) Stats() Stats {
	c := &s.counters
	st := Stats{
		SourceStats: connect.SourceStats{
			Fetched:      c.fetched.Load(),
			Done:         c.done.Load(),
			Retried:      c.retried.Load(),
			DeadLettered: c.deadLettered.Load(),
			DecodeFailed: c.decodeFailed.Load(),
			Released:     c.released.Load(),
			Published:    c.published.Load(),
			Lag:          -1,
		},
		Committed:    c.committed.Load(),
		CommitFailed: c.commitFailed.Load(),
		Assigned:     c.assigned.Load(),
		Revoked:      c.revoked.Load(),
		Lost:         c.lost.Load(),
		Paused:       c.paused.Load(),
		GivenBack:    c.givenBack.Load(),
		Transactions: c.transactions.Load(),
		Aborted:      c.aborted.Load(),
	}
	s.mu.Lock()
	r := s.live
	s.mu.Unlock()
	if r == nil {
		return st
	}
	r.mu.Lock()
	st.Held, st.HeldBytes = r.held, r.heldBytes
	known := len(r.parts) > 0
	var lag int64
	for _, p := range r.parts {
		l := p.lag()
		if l < 0 {
			known = false
		} else {
			lag += l
		}
		st.Partitions = append(st.Partitions, connect.PartitionStats{Name: p.name, Lag: l, Held: p.unfinished})
	}
	r.mu.Unlock()
	if known {
		st.Lag = lag
	}
	slices.SortFunc(st.Partitions, func(a, b connect.PartitionStats) int { return strings.Compare(a.Name, b.Name) })
	return st
}

// SourceStats returns the counts every connector reports, for
// contrib/prometheus ([connect.Reporter]).
func (s *Source[T]) SourceStats() connect.SourceStats { return s.Stats().SourceStats }

var _ connect.Reporter = (*Source[int])(nil)

type counters struct {
	fetched, done, retried, deadLettered, decodeFailed, released, published atomic.Uint64
	committed, commitFailed, assigned, revoked, lost, paused                atomic.Uint64
	transactions, aborted, givenBack                                        atomic.Uint64
}
