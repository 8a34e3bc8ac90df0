package statepipe

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/statepipe/statepipe/internal/ring"
)

// ErrBatcherShared is the error of a request added to a Batcher that
// already serves other Pipelines: a Batcher belongs to one Pipelines.
var ErrBatcherShared = errors.New("statepipe: Batcher used by two Pipelines")

// ErrNotRunning is the error of a request added to a Batcher outside a
// stage of running Pipelines.
var ErrNotRunning = errors.New("statepipe: Batcher.Add outside a running stage, or twice in one")

// Batcher gathers requests from a stage into batches and serves each batch
// with one call of its flush function, so that items streaming one by one
// reach a bulk API in bulk. A stage hands its request over with
// return b.Add(r); the worker is free at once. When the batch flushes,
// every request resumes at its own Next on a free worker: batching can sit
// anywhere in the machine.
//
// A batch is due when MaxWait has passed since its first request, when
// nothing is left running that could join it (so a lone request does not
// wait for MaxWait), and when the Pipelines close. A due batch flushes as
// soon as one of the MaxFlushes flush slots is free, and goes on taking
// requests until then: requests that arrive while every slot is busy
// gather into the next batch (group commit). A batch that holds MaxItems
// requests (or MaxBytes of data) takes no more and flushes when a slot is
// free, due or not.
//
// A Batcher is made once, typically in the machine's constructor, and
// serves one Pipelines. Its goroutines (up to MaxFlushes flush runners, and
// one for linger deadlines if MaxWait is not 0) start with its first
// request and stop in Pipelines.Close.
type Batcher[T any] struct {
	flush func(ctx context.Context, batch []Request[T]) error
	cfg   batchConfig
	size  func(T) int
	err   error // a configuration problem: New reports it, Add fails with it

	mu       sync.Mutex
	p        *Pipelines[T] // bound by the first Add
	node     node          // its node in the Pipelines' graph
	index    batchIndex[T] // open batches by key
	pending  ring.Queue[*batch[T]]
	queue    ring.Queue[*batch[T]]
	closing  bool // the Pipelines are shutting down
	counters batchCounters
	nextID   uint64 // identifies members for their cancellation watchers
	warning  string // why the Pipelines' bound caps this batcher, if it does

	// Flush runners: started as batches come due, at most MaxFlushes;
	// idle ones wait for a claim (or quit). waiting counts those not yet
	// claimed; busy those flushing.
	runners, waiting, busy int
	claim                  chan struct{} // one token per claimed runner; never fills

	// Spare batches (with their member slices) and flush slices of
	// flushed ones, kept for the next.
	spareBatches []*batch[T]
	spareReqs    [][]Request[T]

	wake chan struct{} // wakes the linger goroutine: a new deadline
	quit chan struct{} // closed to stop the goroutines
	wg   sync.WaitGroup
}

// A batch is one group of parked requests that will share a flush call.
// pending holds the batches open and not yet due, in order of their first
// request (so of their deadline); queue holds those to flush, in order:
// due ones, still open to joins, and full ones. Both drop entries lazily:
// a batch leaves pending when it comes due, and is skipped when emptied.
type batch[T any] struct {
	key     any // for keyed batchers, to remove it from the index
	members []member[T]
	bytes   int
	first   time.Time
	reason  FlushReason
	closed  bool // out of the index: full, or taken for its flush
	queued  bool // in queue: due or full
}

// maxPresize caps the capacity a new batch reserves for its members.
const maxPresize = 4096

// member is a parked request and the watcher of its context.
type member[T any] struct {
	rec    *record[T] // the request is in rec.req
	id     uint64
	size   int         // of its data, for MaxBytes
	parked int64       // clock reading when it was added
	stop   func() bool // stops the cancellation watcher; nil if none
}

// NewBatcher returns a Batcher that serves batches with flush.
//
// In flush, the batcher owns batch for the duration of the call: set each
// element's Data, Err and Next in place (other changes are ignored), and do
// not touch batch after returning: it may serve another batch. A flush
// that gives up when its context ends (see [FlushTimeout]) while a call it
// started goes on must give that call a copy of what it needs. A
// non-nil return fails every element that has no Err of its own; a panic
// fails every element with a [*PanicError]. Each element then resumes at
// its Next, or comes out if Next is nil or Err is set. flush's ctx is not
// tied to the members' contexts: a member cancelled while parked leaves the
// batch at once and comes out with its context's error. It ends only with
// [FlushTimeout].
//
// A member whose context ends after the flush succeeded comes out with
// the context's error at its next stage, although flush did its work: a
// flush that writes should be idempotent, or record in Data what it did.
//
// A nil flush or an invalid option (a typed option such as [BatchKey] for
// another data type, say) is a configuration error, reported the way
// every one is: [New] fails with an error wrapping [ErrInvalidOption] and
// naming the batcher, if the batcher is one of the machine's fields (as it
// usually is); otherwise each request added to it fails with that error.
func NewBatcher[T any](flush func(ctx context.Context, batch []Request[T]) error, opts ...BatchOption) *Batcher[T] {
	if flush == nil {
		opts = append(opts[:len(opts):len(opts)], batchOptionFunc(func(c *batchConfig) {
			c.problems = append(c.problems, "nil flush function")
		}))
	}
	cfg, size, newIndex, err := validateBatch[T](opts)
	b := &Batcher[T]{
		flush: flush,
		cfg:   cfg,
		size:  size,
		err:   err,
		index: newIndex(),
		claim: make(chan struct{}, cfg.maxFlushes),
		wake:  make(chan struct{}, 1),
		quit:  make(chan struct{}),
	}
	b.counters.park.reset()
	b.counters.flush.reset()
	return b
}

// Add parks r in the current batch; use it as a stage's return value:
// return b.Add(r). The worker lets go of r at once. Set r.Next before, to
// the stage that should run after the flush (flush may change it). Add
// never blocks.
//
// Only the stage running r can hand it over, and only once: Add outside a
// running stage, of a copy kept from another stage call, or a second time
// in one stage call, returns r with Err set to [ErrNotRunning] and takes
// nothing. Add costs a lock and no allocation, unless r's context can be
// cancelled (it is then watched, for the request to leave its batch at
// once if it ends).
func (b *Batcher[T]) Add(r Request[T]) Request[T] {
	switch {
	case b.err != nil:
		r.Err = b.err
		return r
	case r.Ctx == nil:
		r.Err = ErrNilContext
		return r
	case r.rec == nil:
		r.Err = ErrNotRunning
		return r
	}
	p := r.rec.p // a record's Pipelines never changes: safe to read from any copy
	if r.rec.owner.Load() != r.tag || r.tag == 0 {
		// Stale at a glance: refused before it binds the batcher to a
		// Pipelines (take below is what decides).
		r.Err = ErrNotRunning
		return r
	}
	size := 0
	if b.size != nil {
		size = b.size(r.Data) // user code: outside the lock
	}
	b.mu.Lock()
	defer b.mu.Unlock() // also if the key function panics
	if b.p == nil {
		b.bind(p)
	}
	if b.p != p {
		r.Err = ErrBatcherShared
		return r
	}
	bt := b.index.get(r.Data, b) // calls the key function before changing anything
	// Take the request from its stage: only the running stage's own,
	// current Request can be taken, and once. Nothing fails after this.
	rec, ok := r.take()
	if !ok {
		if len(bt.members) == 0 {
			b.index.del(bt) // made for r: let it go
		}
		r.Err = ErrNotRunning
		return r
	}
	rec.park(&r, b.node)
	rec.attempt = 1 // of the flush, from now on
	b.join(rec, bt, size)
	return parkedAt[T](b.node)
}

// join makes rec, which the caller took, a member of bt. b.mu is held.
func (b *Batcher[T]) join(rec *record[T], bt *batch[T], size int) {
	b.nextID++
	id := b.nextID
	// Watch the member's context only if it can end: a background
	// context costs nothing here. The watcher waits for b.mu, so it
	// finds the member in place.
	var stop func() bool
	if ctx := rec.req.Ctx; ctx.Done() != nil {
		b.wg.Add(1)
		stop = context.AfterFunc(ctx, func() {
			defer b.wg.Done()
			// On a frame of the engine: the Resumed event is observed
			// here, and Close from the observer must be refused.
			engineCall(func() { b.cancel(bt, id) })
		})
	}
	// The monotonic clock alone: half the cost of time.Now, which Add
	// needs only for a new batch's linger deadline.
	now := clock()
	if len(bt.members) == 0 {
		b.opened(bt)
	}
	bt.members = append(bt.members, member[T]{rec: rec, id: id, parked: now, size: size, stop: stop})
	bt.bytes += size
	b.counters.add()
	switch {
	case len(bt.members) >= b.cfg.maxItems:
		b.full(bt, FlushSize)
	case b.cfg.maxBytes > 0 && bt.bytes >= b.cfg.maxBytes:
		b.full(bt, FlushBytes)
	}
}

// rejoin parks a request whose flush failed with a marked error in b
// again, once its backoff is over, to go out with a later batch. A panic
// in the batcher's key or size function fails it.
func (b *Batcher[T]) rejoin(rec *record[T]) {
	if err := b.tryRejoin(rec); err != nil {
		rec.req.Err = err
		b.p.resume(rec) // with Err set, the worker sends it out
	}
}

func (b *Batcher[T]) tryRejoin(rec *record[T]) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = b.p.panicked(b.cfg.name+" key", v)
		}
	}()
	size := 0
	if b.size != nil {
		size = b.size(rec.req.Data)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.join(rec, b.index.get(rec.req.Data, b), size)
	return nil
}

// newBatch returns an empty batch for the index to open, reused from an
// earlier flush when it can be, with room for MaxItems members reserved.
// b.mu is held.
func (b *Batcher[T]) newBatch() *batch[T] {
	if n := len(b.spareBatches); n > 0 {
		bt := b.spareBatches[n-1]
		b.spareBatches = b.spareBatches[:n-1]
		return bt
	}
	bt := &batch[T]{}
	if b.size == nil {
		bt.members = make([]member[T], 0, min(b.cfg.maxItems, maxPresize))
	}
	return bt
}

// bind attaches b to p on first use. b.mu is held.
func (b *Batcher[T]) bind(p *Pipelines[T]) {
	b.p = p
	b.node, b.closing = p.addParker(b)
	if need := b.cfg.maxItems * b.cfg.maxFlushes; p.cfg.maxInFlight < need {
		// A batcher New did not find (not a field of the machine) may
		// need more room than the bound leaves: say so, once.
		b.warning = boundTooSmall(b.cfg, p.cfg.maxInFlight)
		p.log.Warn("statepipe: "+b.warning, "batch", b.cfg.name)
	}
	if b.cfg.maxWait > 0 {
		b.wg.Add(1)
		go b.lingers()
	}
}

// opened handles a batch's first member: it is due at once if MaxWait is
// 0 or the Pipelines are closing, and otherwise waits for its deadline.
// b.mu is held.
func (b *Batcher[T]) opened(bt *batch[T]) {
	switch {
	case b.closing:
		b.due(bt, FlushShutdown)
	case b.cfg.maxWait == 0:
		b.due(bt, FlushLinger)
	default:
		bt.first = time.Now()
		b.pending.Push(bt)
		select { // a new deadline for the linger goroutine
		case b.wake <- struct{}{}:
		default:
		}
	}
}

// lingers makes batches due when their MaxWait has passed. engineClosed
// stops it.
func (b *Batcher[T]) lingers() {
	defer b.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		b.mu.Lock()
		wait := b.dueByNow(time.Now())
		b.mu.Unlock()
		if wait > 0 {
			timer.Reset(wait)
		}
		select {
		case <-b.wake:
		case <-timer.C:
		case <-b.quit:
			return
		}
		timer.Stop()
	}
}

// dueByNow makes due the pending batches whose MaxWait has passed, and
// returns how long until the next one's does (0: none pending). b.mu is
// held.
func (b *Batcher[T]) dueByNow(now time.Time) time.Duration {
	for {
		bt, ok := b.pending.Peek()
		switch {
		case !ok:
			return 0
		case bt.queued || len(bt.members) == 0:
			b.pending.Pop() // due or emptied since: nothing to wait for
		case now.Before(bt.first.Add(b.cfg.maxWait)):
			return bt.first.Add(b.cfg.maxWait).Sub(now)
		default:
			b.pending.Pop()
			b.due(bt, FlushLinger)
		}
	}
}

// cancel takes a member whose context ended out of its batch and sends it
// out with the context's error, without waiting for the flush.
func (b *Batcher[T]) cancel(bt *batch[T], id uint64) {
	b.mu.Lock()
	m, ok := b.remove(bt, id)
	b.mu.Unlock()
	if ok { // outside the lock: resume calls the observer
		b.resume(m)
	}
}

// remove takes member id out of bt, unless bt was taken for its flush
// (take has then seen the watcher fire and fails the member itself), and
// fails it with its context's error. b.mu is held.
func (b *Batcher[T]) remove(bt *batch[T], id uint64) (member[T], bool) {
	i := slices.IndexFunc(bt.members, func(m member[T]) bool { return m.id == id })
	if i < 0 {
		return member[T]{}, false
	}
	m := bt.members[i]
	bt.members = slices.Delete(bt.members, i, i+1)
	bt.bytes -= m.size
	if len(bt.members) == 0 && !bt.closed {
		// Retire the emptied batch: the next request for its key starts
		// a new one, with its own deadline. pending and queue skip it.
		bt.closed = true
		b.index.del(bt)
	}
	m.rec.req.Err = m.rec.req.Ctx.Err()
	b.counters.cancel(clock() - m.parked)
	return m, true
}

// engineIdle is called by a worker when nothing is running and nothing is
// queued: no request can join a pending batch, so it is due now rather
// than at its linger deadline, and flushes as soon as a slot is free.
func (b *Batcher[T]) engineIdle() {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closing:
		b.allDue(FlushShutdown)
	case !b.cfg.noIdle:
		b.allDue(FlushIdle)
	}
}

// engineClosing is called when Close begins: everything pending is due,
// and so is every batch opened from now on.
func (b *Batcher[T]) engineClosing() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closing = true
	b.allDue(FlushShutdown)
}

// engineClosed is called once every request is out: stop the goroutines
// (idle by now) and wait for them, and for any cancellation watcher still
// running.
func (b *Batcher[T]) engineClosed() {
	close(b.quit)
	b.wg.Wait()
}

// allDue makes every pending batch due. b.mu is held.
func (b *Batcher[T]) allDue(reason FlushReason) {
	for {
		bt, ok := b.pending.Pop()
		if !ok {
			return
		}
		if !bt.queued && len(bt.members) > 0 {
			b.due(bt, reason)
		}
	}
}

// stats, name and parked serve the engine (parker).
func (b *Batcher[T]) stats() BatchStats { return b.Stats() }
func (b *Batcher[T]) name() string      { return b.cfg.name }

func (b *Batcher[T]) parked() int { return b.counters.holding() }
