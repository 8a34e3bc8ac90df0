// Package batchadd hands requests to a Batcher, right and wrong.
package batchadd

import (
	"context"
	"fmt"

	"github.com/statepipe/statepipe"
)

type Store struct {
	bulk *statepipe.Batcher[int]
	done statepipe.Stage[int]
	ch   chan statepipe.Request[int]

	routes []statepipe.Stage[int] // every stage named once, for routing by data
}

func NewStore() *Store {
	s := &Store{ch: make(chan statepipe.Request[int], 1)}
	s.done = s.Done
	s.routes = []statepipe.Stage[int]{s.Held, s.Reassigned, s.Dropped, s.Logged, s.Sent, s.Routed, s.Kept, s.Fresh, s.Via, s.Branch, s.Racing}
	s.bulk = statepipe.NewBatcher(func(ctx context.Context, batch []statepipe.Request[int]) error { return nil })
	return s
}

// Start is the documented way: set Next, then return what Add returns.
func (s *Store) Start(r statepipe.Request[int]) statepipe.Request[int] {
	if r.Data < 0 {
		r.Err = fmt.Errorf("negative %d", r.Data) // before Add, on another path: fine
		return r
	}
	r.Next = s.done
	return s.bulk.Add(r)
}

// Held keeps Add's result and returns it: fine.
func (s *Store) Held(r statepipe.Request[int]) statepipe.Request[int] {
	parked := s.bulk.Add(r)
	return parked
}

// Reassigned makes r the placeholder: reading it after is reading that.
func (s *Store) Reassigned(r statepipe.Request[int]) statepipe.Request[int] {
	r = s.bulk.Add(r)
	return r
}

// Dropped throws the result away and returns the request itself.
func (s *Store) Dropped(r statepipe.Request[int]) statepipe.Request[int] {
	s.bulk.Add(r) // want `the result of s\.bulk\.Add is not returned: the stage must return it \(return s\.bulk\.Add\(r\)\)`
	return r      // want `r is used after s\.bulk\.Add\(r\): the batcher owns it now`
}

// Logged reads the request after handing it over.
func (s *Store) Logged(r statepipe.Request[int]) statepipe.Request[int] {
	parked := s.bulk.Add(r)
	fmt.Println(r.Data) // want `r is used after s\.bulk\.Add\(r\)`
	return parked
}

// Sent sends the request it handed over.
func (s *Store) Sent(r statepipe.Request[int]) statepipe.Request[int] {
	out := s.bulk.Add(r)
	s.ch <- r // want `r is used after s\.bulk\.Add\(r\)`
	return out
}

// Routed sets Next after Add: too late, the batcher has the request.
func (s *Store) Routed(r statepipe.Request[int]) statepipe.Request[int] {
	out := s.bulk.Add(r)
	r.Next = s.done // want `r is used after s\.bulk\.Add\(r\)`
	return out
}

// Kept stores Add's result and returns something else.
func (s *Store) Kept(r statepipe.Request[int]) statepipe.Request[int] {
	parked := s.bulk.Add(r) // want `the result of s\.bulk\.Add is not returned`
	_ = parked
	return statepipe.Request[int]{}
}

// Fresh reuses the variable for a new request after Add: not a use of
// the handed-over one.
func (s *Store) Fresh(r statepipe.Request[int]) statepipe.Request[int] {
	out := s.bulk.Add(r)
	r = statepipe.Request[int]{Data: 1}
	_ = r
	return out
}

func (s *Store) Done(r statepipe.Request[int]) statepipe.Request[int] { return r }

func (s *Store) Close() {}

// park is a helper stages return through: its own return is Add's.
func (s *Store) park(r statepipe.Request[int]) statepipe.Request[int] { return s.bulk.Add(r) }

func (s *Store) Via(r statepipe.Request[int]) statepipe.Request[int] { return s.park(r) }

// Branch parks on one path and fails the request on the other: the use
// after the if is on the other path.
func (s *Store) Branch(r statepipe.Request[int]) statepipe.Request[int] {
	if r.Data > 0 {
		parked := s.bulk.Add(r)
		return parked
	}
	r.Err = fmt.Errorf("not positive: %d", r.Data)
	return r
}

// Racing parks from a goroutine of the stage and returns the request
// itself: both run it.
func (s *Store) Racing(r statepipe.Request[int]) statepipe.Request[int] {
	go func() {
		s.bulk.Add(r) // want `the result of s\.bulk\.Add is not returned`
	}()
	return r
}

// Probe calls Add outside any stage, as a test of ErrNotRunning does:
// not per-request code, not reported.
func Probe(b *statepipe.Batcher[int]) error {
	return b.Add(statepipe.Request[int]{Data: 1}).Err
}
