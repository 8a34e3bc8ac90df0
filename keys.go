package statepipe

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// WithKey orders requests by key: a request enters Start only after every
// request with an equal key whose Submit returned before its own Submit
// was called has come out of the machine (delivered or failed), across
// all groups. Requests with different keys never wait for each other.
//
// A request waiting for its key holds no worker and counts as in flight;
// if its context ends it leaves at once with the context's error, and
// the key moves on without it. A request keeps its key while it runs, is
// parked in a batch or waits for a retry, until it comes out: a slow key
// delays only its own requests. A key with nothing inside costs nothing;
// memory is bounded by the in-flight bounds whatever the number of keys.
//
// key is called once per request, in Submit, with the submitted data; it
// must not block. A panic in it fails that request with a [*PanicError]
// (Stage "key"). A failed request does not stop its key: the requests
// after it run as usual, unless [WithKeyFailFast] is set.
func WithKey[T any, K comparable](key func(T) K) Option {
	return optionFunc(func(c *config) {
		switch {
		case key == nil:
			c.problems = append(c.problems, "WithKey: nil key function")
		case c.keys != nil:
			c.problems = append(c.problems, "WithKey given twice")
		}
		c.keys = func(p *Pipelines[T]) keyer[T] { return newKeyTable(p, key) }
	})
}

// WithKeyFailFast makes a failure stop its key's waiting requests: when a
// request with a key fails, the requests waiting for that key at that
// moment come out without running, one after another, with an error that
// matches [ErrKeyFailed] and wraps the failure. A request submitted once
// none wait runs as usual. It needs [WithKey].
func WithKeyFailFast() Option {
	return optionFunc(func(c *config) { c.keyFailFast = true })
}

// ErrKeyFailed is matched by the error of a request that did not run
// because an earlier request with its key failed ([WithKeyFailFast]).
var ErrKeyFailed = errors.New("statepipe: an earlier request with the same key failed")

// keyer is the key table of a Pipelines with WithKey.
type keyer[T any] interface {
	// enter takes rec's turn for its key, in Submit. It returns true if
	// rec may run now, false if it waits: the table resumes it in turn.
	enter(rec *record[T]) bool
	waiting() int
	stats() KeyStats
	close()
}

// keyLine is the line of one key, which a request holds while inside.
type keyLine[T any] interface {
	// leave is called when the request holding the key has come out
	// with err; it returns the next request to run, if one waits.
	leave(err error) *record[T]
}

// keyTurn is a request's place in its key's line while it waits; it is
// read and written under its shard's lock only.
type keyTurn[T any] struct {
	prev, next *record[T]
	since      int64  // clock reading when it began to wait
	ticket     uint64 // tells this wait from the record's later ones
	waiting    bool
	stop       func() bool // stops the watcher of its context; nil if none
}

// KeyStats describe the keys of a Pipelines with [WithKey].
type KeyStats struct {
	Keys        int           // keys with a request inside the machine
	Waiting     int           // of those, keys with requests waiting for their turn
	Requests    int           // requests waiting for their key's turn
	LongestWait time.Duration // how long the longest waiting of them has waited so far
}

// keyShards spread the keys over locks, so that submitters and workers of
// different keys rarely meet.
const keyShards = 64

// maxSpareLines is how many lines a shard keeps for new keys.
const maxSpareLines = 64

type keyTable[T any, K comparable] struct {
	p        *Pipelines[T]
	key      func(T) K
	seed     maphash.Seed
	failFast bool
	tickets  atomic.Uint64
	nWaiting atomic.Int64
	watches  sync.WaitGroup
	shards   [keyShards]keyShard[T, K]
}

type keyShard[T any, K comparable] struct {
	mu    sync.Mutex
	lines map[K]*line[T, K]
	spare []*line[T, K]
	_     [64]byte // keeps neighbouring shards' locks off one cache line
}

// line is the requests inside with one key: the one holding it (not
// listed) and those waiting, oldest first.
type line[T any, K comparable] struct {
	t           *keyTable[T, K]
	shard       *keyShard[T, K]
	k           K
	first, last *record[T]
}

func newKeyTable[T any, K comparable](p *Pipelines[T], key func(T) K) *keyTable[T, K] {
	t := &keyTable[T, K]{p: p, key: key, seed: maphash.MakeSeed(), failFast: p.cfg.keyFailFast}
	for i := range t.shards {
		t.shards[i].lines = make(map[K]*line[T, K])
	}
	return t
}

func (t *keyTable[T, K]) enter(rec *record[T]) bool {
	k, err := t.keyOf(rec.req.Data)
	if err != nil {
		rec.req.Err = err // it runs, to fail at once, and holds no key
		return true
	}
	sh := &t.shards[maphash.Comparable(t.seed, k)%keyShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ln := sh.lines[k]
	if ln == nil {
		ln = sh.newLine(t, k)
		sh.lines[k] = ln
		rec.line = ln
		return true
	}
	rec.line = ln
	turn := &rec.turn
	turn.since, turn.ticket, turn.waiting = clock(), t.tickets.Add(1), true
	turn.prev, turn.next = ln.last, nil
	if ln.last != nil {
		ln.last.turn.next = rec
	} else {
		ln.first = rec
	}
	ln.last = rec
	t.nWaiting.Add(1)
	// Watch the context only if it can end. The watcher waits for sh.mu,
	// so it finds the request in place; while the request waits, its
	// line is alive (held), so ln is still its line then.
	if ctx := rec.req.Ctx; ctx.Done() != nil {
		ticket := turn.ticket
		t.watches.Add(1)
		turn.stop = context.AfterFunc(ctx, func() {
			defer t.watches.Done()
			engineCall(func() { t.cancel(ln, rec, ticket) })
		})
	}
	return false
}

// keyOf calls the key function, turning a panic into the request's error.
func (t *keyTable[T, K]) keyOf(data T) (k K, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = t.p.panicked("key", v)
		}
	}()
	return t.key(data), nil
}

func (sh *keyShard[T, K]) newLine(t *keyTable[T, K], k K) *line[T, K] {
	if n := len(sh.spare); n > 0 {
		ln := sh.spare[n-1]
		sh.spare = sh.spare[:n-1]
		ln.k = k
		return ln
	}
	return &line[T, K]{t: t, shard: sh, k: k}
}

func (ln *line[T, K]) leave(err error) *record[T] {
	sh := ln.shard
	sh.mu.Lock()
	next := ln.first
	if next == nil {
		delete(sh.lines, ln.k)
		var zero K
		ln.k = zero
		if len(sh.spare) < maxSpareLines {
			sh.spare = append(sh.spare, ln)
		}
		sh.mu.Unlock()
		return nil
	}
	ln.unlink(next)
	stop := next.turn.stop
	next.turn.stop = nil
	sh.mu.Unlock()
	if stop != nil && stop() {
		ln.t.watches.Done() // the watcher will never run
	}
	// A watcher that fired late finds the request running and leaves it:
	// the worker sees the context's end.
	if err != nil && ln.t.failFast {
		next.req.Err = fmt.Errorf("%w: %w", ErrKeyFailed, err)
	}
	return next
}

// unlink takes rec out of the waiting list. The shard's lock is held.
func (ln *line[T, K]) unlink(rec *record[T]) {
	turn := &rec.turn
	if turn.prev != nil {
		turn.prev.turn.next = turn.next
	} else {
		ln.first = turn.next
	}
	if turn.next != nil {
		turn.next.turn.prev = turn.prev
	} else {
		ln.last = turn.prev
	}
	turn.prev, turn.next, turn.waiting = nil, nil, false
	ln.t.nWaiting.Add(-1)
}

// cancel sends a waiting request whose context ended out, with the
// context's error, unless its turn has come meanwhile.
func (t *keyTable[T, K]) cancel(ln *line[T, K], rec *record[T], ticket uint64) {
	sh := ln.shard
	sh.mu.Lock()
	if !rec.turn.waiting || rec.turn.ticket != ticket {
		sh.mu.Unlock()
		return
	}
	ln.unlink(rec)
	rec.turn.stop = nil
	sh.mu.Unlock()
	rec.line = nil // it never held the key
	rec.req.Err = rec.req.Ctx.Err()
	t.p.resume(rec) // with Err set, the worker sends it out
}

func (t *keyTable[T, K]) waiting() int { return int(t.nWaiting.Load()) }

func (t *keyTable[T, K]) stats() KeyStats {
	var s KeyStats
	now := clock()
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		s.Keys += len(sh.lines)
		for _, ln := range sh.lines {
			if ln.first == nil {
				continue
			}
			s.Waiting++
			s.LongestWait = max(s.LongestWait, time.Duration(now-ln.first.turn.since))
			for r := ln.first; r != nil; r = r.turn.next {
				s.Requests++
			}
		}
		sh.mu.Unlock()
	}
	return s
}

// close waits for the watchers of contexts; every request is out by now.
func (t *keyTable[T, K]) close() { t.watches.Wait() }
