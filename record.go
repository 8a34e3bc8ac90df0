package statepipe

import (
	"sync"
	"sync/atomic"
)

// record is the engine's bookkeeping for one request while it is inside
// the machine: from Submit until it is handed to its group. Records are
// pooled, so a Request is small to copy and the engine allocates nothing
// per request; a Request names its record and which stage call of it the
// copy belongs to (its tag).
type record[T any] struct {
	p *Pipelines[T] // never changes: a stale Request may read it at any time

	// req holds the request while no worker has it: queued or parked. A
	// worker copies it out, and back when it parks the request.
	req Request[T]

	// owner is the tag of the stage call running the request, 0 while no
	// stage runs it. Whoever takes the request away from a running stage
	// (a Batcher, the worker when the stage returns) swaps owner from that
	// tag: exactly one of them wins, and a stale copy never does.
	owner atomic.Uint64

	group   *Group[T]
	seq     uint64 // position in its group, for ordered release and Do
	queued  int64  // clock reading at Submit; 0 if not timed
	started int64  // clock reading when a worker first picked it up
	from    node   // the graph node it comes from: in, a stage or a batcher

	// For WithDAG: the stages run so far, and the last few for CycleError.
	visited bitset
	trail   trail

	// attempt counts the runs of the current step (a stage, or a
	// batcher's flush): 1 on the first. retry is set while the request
	// waits to run its stage again, so that the run is not counted as a
	// new step.
	attempt int32
	retry   bool
	waiting retryWait[T] // while it waits out a retry's backoff

	// With WithKey: the line of its key while inside the machine, and its
	// place in it while it waits for its turn.
	line keyLine[T]
	turn keyTurn[T]
}

// take makes the caller the request's owner, if r is the request of the
// stage call running right now: the way a parker takes a request from its
// stage. It fails for a Request that no Pipelines admitted, a copy kept
// from an earlier stage call, and a request already taken.
func (r *Request[T]) take() (*record[T], bool) {
	rec := r.rec
	if rec == nil || r.tag == 0 || !rec.owner.CompareAndSwap(r.tag, 0) {
		return nil, false
	}
	return rec, true
}

// park stores r's fields in its record, which the caller took with take:
// the request waits there until it is resumed.
func (rec *record[T]) park(r *Request[T], at node) {
	rec.req = *r
	rec.from = at
}

// records hands out records and takes them back. A sync.Pool keeps them
// per P, so that Submit and the end of a request cost no lock.
type records[T any] struct {
	p    *Pipelines[T]
	pool sync.Pool
}

func (rs *records[T]) get() *record[T] {
	if rec, ok := rs.pool.Get().(*record[T]); ok {
		return rec
	}
	return &record[T]{p: rs.p}
}

// move gives the request held in rec, which the caller owns, a fresh
// record, and recycles rec: copies of the request that name rec can never
// be taken again.
func (rs *records[T]) move(rec *record[T]) *record[T] {
	fresh := rs.get()
	fresh.group, fresh.seq = rec.group, rec.seq
	fresh.queued, fresh.started, fresh.from = rec.queued, rec.started, rec.from
	fresh.visited.low, fresh.visited.high = rec.visited.low, append(fresh.visited.high[:0], rec.visited.high...)
	fresh.trail = rec.trail
	fresh.attempt, fresh.line = rec.attempt, rec.line
	rs.put(rec)
	return fresh
}

// put recycles rec once its request has left the machine. Nothing of the
// request stays reachable from it. Its owner is left as it is: 0, or the
// tag of a call that never ran (a request that failed between calls),
// which no copy carries; the next request's tags have another id.
func (rs *records[T]) put(rec *record[T]) {
	rec.req = Request[T]{}
	rec.group = nil
	rec.queued, rec.started = 0, 0
	rec.visited.clear()
	rec.trail = trail{}
	rec.attempt, rec.retry, rec.line = 0, false, nil
	// waiting and turn are empty by now, and left alone: a watcher that
	// fired late may read them (waiting under the retries' lock, turn's
	// ticket atomically).
	rs.pool.Put(rec)
}

// bitset is a set of small non-negative integers (stage ids). The first 64
// live in a word; more grow a slice, which the record keeps for its next
// requests.
type bitset struct {
	low  uint64
	high []uint64
}

// add adds i and reports whether it was already in the set.
func (s *bitset) add(i int) (had bool) {
	if i < 64 {
		had = s.low&(1<<i) != 0
		s.low |= 1 << i
		return had
	}
	w, bit := i/64-1, uint64(1)<<(i%64)
	for len(s.high) <= w {
		s.high = append(s.high, 0)
	}
	had = s.high[w]&bit != 0
	s.high[w] |= bit
	return had
}

func (s *bitset) clear() {
	s.low = 0
	clear(s.high)
}

// trail records the last len(trail.ids) stages a request ran, so that a
// CycleError can name the path without an allocation per request.
type trail struct {
	ids  [8]int32
	hops uint32
}

func (t *trail) push(id int) {
	t.ids[t.hops%uint32(len(t.ids))] = int32(id)
	t.hops++
}

// path returns the recorded stage ids, oldest first.
func (t *trail) path() []int {
	n := min(int(t.hops), len(t.ids))
	out := make([]int, 0, n)
	for i := int(t.hops) - n; i < int(t.hops); i++ {
		out = append(out, int(t.ids[i%len(t.ids)]))
	}
	return out
}
