package otel

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// flight is what the observer keeps about a request between its
// RequestStarted and RequestDone events.
type flight struct {
	ctx    context.Context // carries span: the parent of stage spans, and the context of measurements
	span   trace.Span      // the request span
	start  time.Time       // when it was submitted: the span's start
	wait   time.Duration   // how long it queued before a worker picked it up
	parked time.Time       // when it last parked; zero if never
}

// shardBits sets the number of shards of an inflight map. With 64 shards
// two workers meet on one lock with a chance of 1 in 64 per event, and the
// empty map costs about 4 KiB.
const shardBits = 6

// inflight maps request ids to their flights. Workers report different
// requests at the same time, so the map is cut into shards, each with its
// own lock, instead of one map behind one lock. Its size is bounded by the
// Pipelines' in-flight bound: an entry lives from RequestStarted to
// RequestDone, which the engine sends for every request it starts.
type inflight struct {
	shards [1 << shardBits]shard
}

type shard struct {
	mu sync.Mutex
	m  map[uint64]flight
	_  [64 - 16]byte // one cache line per shard: no false sharing between locks
}

func newInflight() *inflight {
	f := new(inflight)
	for i := range f.shards {
		f.shards[i].m = make(map[uint64]flight)
	}
	return f
}

// shard picks id's shard. Ids are a group number in the high bits and a
// sequence number in the low ones; the multiplication (Fibonacci hashing)
// mixes both into the top bits.
func (f *inflight) shard(id uint64) *shard {
	return &f.shards[(id*0x9E3779B97F4A7C15)>>(64-shardBits)]
}

// put stores fl for id and returns the flight it replaced, if any.
func (f *inflight) put(id uint64, fl flight) (old flight, replaced bool) {
	s := f.shard(id)
	s.mu.Lock()
	old, replaced = s.m[id]
	s.m[id] = fl
	s.mu.Unlock()
	return old, replaced
}

func (f *inflight) get(id uint64) (flight, bool) {
	s := f.shard(id)
	s.mu.Lock()
	fl, ok := s.m[id]
	s.mu.Unlock()
	return fl, ok
}

// park records that id parked at t and returns its flight.
func (f *inflight) park(id uint64, t time.Time) (flight, bool) {
	s := f.shard(id)
	s.mu.Lock()
	fl, ok := s.m[id]
	if ok {
		fl.parked = t
		s.m[id] = fl
	}
	s.mu.Unlock()
	return fl, ok
}

// take removes id's flight and returns it.
func (f *inflight) take(id uint64) (flight, bool) {
	s := f.shard(id)
	s.mu.Lock()
	fl, ok := s.m[id]
	if ok {
		delete(s.m, id)
	}
	s.mu.Unlock()
	return fl, ok
}

// len returns the number of flights.
func (f *inflight) len() int {
	n := 0
	for i := range f.shards {
		s := &f.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
