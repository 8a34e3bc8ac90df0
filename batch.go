package statepipe

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
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
// A batch flushes when it holds MaxItems requests (or MaxBytes of data),
// when MaxWait has passed since its first request, when nothing is left
// running that could join it and no flush of the batcher is under way (so
// a lone request does not wait for MaxWait, while requests that arrive
// during a flush gather for the next), and when the Pipelines close.
//
// A Batcher is made once, typically in the machine's constructor, and
// serves one Pipelines. Its goroutine starts with the first request and
// stops in Pipelines.Close.
type Batcher[T any] struct {
	flush func(ctx context.Context, batch []Request[T]) error
	cfg   batchConfig
	size  func(T) int

	mu       sync.Mutex
	p        *Pipelines[T] // bound by the first Add
	index    batchIndex[T] // pending batches by key
	lingers  []*batch[T]   // pending batches in order of their first request, so of their deadline
	ready    []*batch[T]   // closed batches waiting for a free flush
	running  int           // flushes running
	closing  bool          // the Pipelines are shutting down
	node     node          // its node in the Pipelines' graph
	counters batchCounters
	nextID   uint64 // identifies members for their cancellation watchers

	// Slices of flushed batches, kept for the next ones.
	spareMembers [][]member[T]
	spareReqs    [][]Request[T]

	wake chan struct{} // wakes the dispatcher; holds one pending wake-up
	quit chan struct{} // closed to stop the dispatcher
	wg   sync.WaitGroup
}

// batch is one group of parked requests that will share a flush call.
type batch[T any] struct {
	key     any // for keyed batchers, to remove it from the index
	members []member[T]
	bytes   int
	first   time.Time
	reason  FlushReason
	closed  bool // taken out of the index: no more joins
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
// NewBatcher panics, with an error wrapping [ErrInvalidOption], if flush
// is nil or an option is invalid: these are mistakes in the program, found
// the first time it runs.
func NewBatcher[T any](flush func(ctx context.Context, batch []Request[T]) error, opts ...BatchOption) *Batcher[T] {
	cfg, size, newIndex, err := validateBatch[T](opts)
	if err == nil && flush == nil {
		err = invalid("NewBatcher: nil flush function")
	}
	if err != nil {
		panic(err)
	}
	b := &Batcher[T]{
		flush: flush,
		cfg:   cfg,
		size:  size,
		index: newIndex(),
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
// running stage, or a second time in one stage call, returns r with Err
// set to [ErrNotRunning] and takes nothing.
func (b *Batcher[T]) Add(r Request[T]) Request[T] {
	if r.Ctx == nil {
		r.Err = ErrNilContext
		return r
	}
	if r.rec == nil {
		r.Err = ErrNotRunning
		return r
	}
	p := r.rec.p // a record's Pipelines never changes: safe to read from any copy
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
	bt := b.index.get(r.Data) // calls the key function before changing anything
	// Take the request from its stage: only the running stage's own,
	// current Request can be taken, and once. Nothing fails after this.
	rec, ok := r.take()
	if !ok {
		r.Err = ErrNotRunning
		return r
	}
	rec.park(&r, b.node)
	b.nextID++
	id := b.nextID
	// Watch the member's context only if it can end: a background
	// context costs nothing here. The watcher waits for b.mu, so it
	// finds the member in place.
	var stop func() bool
	if r.Ctx.Done() != nil {
		b.wg.Add(1)
		stop = context.AfterFunc(r.Ctx, func() {
			defer b.wg.Done()
			b.cancel(bt, id)
		})
	}
	// The monotonic clock alone: half the cost of time.Now, which Add
	// needs only for a new batch's linger deadline.
	now := clock()
	if len(bt.members) == 0 {
		bt.first = time.Now()
		b.lingers = append(b.lingers, bt)
		b.signal() // a new deadline for the dispatcher's timer
	}
	if bt.members == nil && b.size == nil {
		bt.members = b.spareMemberSlice()
	}
	bt.members = append(bt.members, member[T]{rec: rec, id: id, parked: now, size: size, stop: stop})
	bt.bytes += size
	b.counters.parked++
	switch {
	case len(bt.members) >= b.cfg.maxItems:
		b.close(bt, FlushSize)
	case b.cfg.maxBytes > 0 && bt.bytes >= b.cfg.maxBytes:
		b.close(bt, FlushBytes)
	case b.cfg.maxWait == 0:
		b.close(bt, FlushLinger)
	}
	return parkedAt[T](b.node)
}

// spareMemberSlice returns an empty slice for a new batch's members, room
// for MaxItems reserved. b.mu is held.
func (b *Batcher[T]) spareMemberSlice() []member[T] {
	if n := len(b.spareMembers); n > 0 {
		s := b.spareMembers[n-1]
		b.spareMembers = b.spareMembers[:n-1]
		return s
	}
	return make([]member[T], 0, min(b.cfg.maxItems, maxPresize))
}

// bind attaches b to p on first use and starts its dispatcher, which p
// stops in Close. b.mu is held.
func (b *Batcher[T]) bind(p *Pipelines[T]) {
	b.p = p
	node, closing := p.addParker(b)
	b.node = node
	if closing {
		b.closing = true
	}
	b.wg.Add(1)
	go b.dispatch()
}

// close takes bt out of the index so that nothing more joins it, and
// queues it for a flush. b.mu is held.
func (b *Batcher[T]) close(bt *batch[T], reason FlushReason) {
	if bt.closed {
		return
	}
	bt.closed, bt.reason = true, reason
	b.index.del(bt)
	b.ready = append(b.ready, bt)
	b.signal()
}

// closeAll queues every pending batch for a flush. b.mu is held.
func (b *Batcher[T]) closeAll(reason FlushReason) {
	for _, bt := range b.lingers {
		if !bt.closed && len(bt.members) > 0 {
			b.close(bt, reason)
		}
	}
	b.lingers = b.lingers[:0]
}

// signal wakes the dispatcher: a batch is ready, a deadline is new, or a
// flush ended. It never blocks, and may be called with b.mu held.
func (b *Batcher[T]) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// dispatch closes batches whose linger has passed and starts flushes,
// at most MaxFlushes at a time. It is the batcher's only long-lived
// goroutine; engineClosed stops it.
func (b *Batcher[T]) dispatch() {
	defer b.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var cancelled []member[T]
	for {
		b.mu.Lock()
		wait := b.lingerDue(time.Now())
		for len(b.ready) > 0 && b.running < b.cfg.maxFlushes {
			bt := b.ready[0]
			b.ready = b.ready[1:]
			var members []member[T]
			members, cancelled = b.take(bt, cancelled)
			if len(members) == 0 { // every member was cancelled
				continue
			}
			b.running++
			b.wg.Add(1)
			go engineGoroutine(&b.wg, func() { b.run(bt, members) })
		}
		b.mu.Unlock()
		for _, m := range cancelled { // outside the lock: resume calls the observer
			b.resume(m)
		}
		clear(cancelled)
		cancelled = cancelled[:0]
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

// lingerDue closes the batches whose MaxWait has passed and returns how
// long until the next one's does (0: none pending). b.mu is held.
func (b *Batcher[T]) lingerDue(now time.Time) time.Duration {
	for len(b.lingers) > 0 {
		bt := b.lingers[0]
		if bt.closed || len(bt.members) == 0 {
			b.lingers = b.lingers[1:]
			continue
		}
		due := bt.first.Add(b.cfg.maxWait)
		if now.Before(due) {
			return due.Sub(now)
		}
		b.close(bt, FlushLinger)
		b.lingers = b.lingers[1:]
	}
	return 0
}

// take stops watching the members of bt and returns those whose
// cancellation did not win. A member whose watcher has already fired is
// failed with its context's error and appended to cancelled, for the
// caller to resume once b.mu is released. b.mu is held.
func (b *Batcher[T]) take(bt *batch[T], cancelled []member[T]) (kept, _ []member[T]) {
	kept = bt.members[:0]
	for _, m := range bt.members {
		if m.stop != nil && m.stop() {
			b.wg.Done() // the watcher will never run
		} else if m.stop != nil {
			// The watcher has fired and waits for b.mu; it will find the
			// batch taken and leave the member to us.
			m.rec.req.Err = m.rec.req.Ctx.Err()
			b.counters.cancelled++
			b.counters.parkedFor(clock() - m.parked)
			cancelled = append(cancelled, m)
			continue
		}
		kept = append(kept, m)
	}
	bt.members = nil
	return kept, cancelled
}

// cancel takes a member whose context ended out of its pending batch and
// sends it out with the context's error, without waiting for the flush.
func (b *Batcher[T]) cancel(bt *batch[T], id uint64) {
	b.mu.Lock()
	m, ok := b.remove(bt, id)
	b.mu.Unlock()
	if ok { // outside the lock: resume calls the observer
		b.resume(m)
	}
}

// remove takes member id out of bt, unless bt was taken for a flush (take
// has then seen the watcher fire and fails the member itself), and fails
// it with its context's error. b.mu is held.
func (b *Batcher[T]) remove(bt *batch[T], id uint64) (member[T], bool) {
	if bt.closed && bt.members == nil {
		return member[T]{}, false
	}
	i := slices.IndexFunc(bt.members, func(m member[T]) bool { return m.id == id })
	if i < 0 {
		return member[T]{}, false
	}
	m := bt.members[i]
	bt.members = slices.Delete(bt.members, i, i+1)
	bt.bytes -= m.size
	switch {
	case len(bt.members) > 0:
	case !bt.closed:
		// Retire the emptied batch: the next request for its key starts
		// a new one, with its own place in b.lingers.
		bt.closed = true
		b.index.del(bt)
	default:
		// Waiting for a flush slot with nothing left to flush: a ready
		// batch would hold back idle flushes (engineIdle).
		b.ready = slices.DeleteFunc(b.ready, func(x *batch[T]) bool { return x == bt })
	}
	m.rec.req.Err = m.rec.req.Ctx.Err()
	b.counters.cancelled++
	b.counters.parkedFor(clock() - m.parked)
	return m, true
}

// run calls flush for one batch and sends its members on: to their next
// stage, or, if they have none (or failed), straight out, without another
// trip through the workers' queue.
func (b *Batcher[T]) run(bt *batch[T], members []member[T]) {
	reqs := b.spareRequests(len(members))
	for i, m := range members {
		reqs[i] = m.rec.req
	}
	ctx := context.Background()
	if b.cfg.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.cfg.timeout)
		defer cancel()
	}
	var ids []uint64 // the members' ids, for an observer
	if b.p.obs != nil {
		ids = make([]uint64, len(members))
		for i, m := range members {
			ids[i] = m.rec.req.ID()
		}
	}
	start := time.Now()
	// The members go on from a deferred call: flush may end its goroutine
	// with runtime.Goexit, which no recover stops.
	returned := false
	var err error
	defer func() {
		if !returned {
			err = b.p.panicked(b.cfg.name+" flush", errGoexit)
			failAll(reqs)
		}
		// reqs is reused only if flush returned in time: a flush that gave
		// up at FlushTimeout may have left a call running that still
		// writes to it.
		reuse := returned && err == nil && ctx.Err() == nil
		b.settle(bt, members, reqs, reuse, ctx, ids, start, err)
	}()
	err = b.call(&ctx, bt.reason, ids, reqs)
	returned = true
}

// settle takes the flush's results back into the members, counts them and
// sends them on. reqs may be reused for later batches only if reuse.
func (b *Batcher[T]) settle(bt *batch[T], members []member[T], reqs []Request[T], reuse bool, ctx context.Context, ids []uint64, start time.Time, err error) {
	end, endClock := time.Now(), clock()
	failed := 0
	for i, m := range members {
		// Only the fields flush may set are taken back: the rest is
		// the engine's bookkeeping, whatever flush did to the slice.
		r := &m.rec.req
		r.Data, r.Err, r.Next = reqs[i].Data, reqs[i].Err, reqs[i].Next
		if r.Err == nil && err != nil {
			r.Err = err
		}
		if r.Err != nil {
			failed++
		}
	}
	if obs := b.p.obs; obs != nil {
		obs.Observe(Event{Kind: BatchFlushed, Ctx: ctx, Batch: b.cfg.name, Reason: bt.reason,
			Size: len(members), Members: ids, Duration: end.Sub(start), Err: err})
	}
	b.mu.Lock()
	b.counters.flushed(bt.reason, len(members), failed, end.Sub(start))
	for _, m := range members {
		b.counters.parkedFor(endClock - m.parked)
	}
	b.running--
	lastFlush := b.running == 0 && len(b.ready) == 0
	b.mu.Unlock()

	// Members with nowhere to go are delivered together, in reqs if it is
	// free again; the rest go back to the workers. They are counted
	// first, so that a consumer that has them all sees them in Stats.
	var tally outTally
	finished := members[:0] // in place: a member resumed is not looked at again
	for _, m := range members {
		if r := &m.rec.req; r.Next == nil || r.Err != nil {
			b.observeResumed(m)
			tally.add(b.p.leaving(m.rec, r))
			finished = append(finished, m)
		} else {
			b.resume(m)
		}
	}
	b.p.countOut(b.node, &tally)
	// Those that finish go out together: one update of the machine's count.
	for _, m := range finished {
		b.p.handOut(m.rec, m.rec.req)
	}
	if len(finished) > 0 {
		b.p.release(int64(len(finished)))
	}
	if lastFlush && tally.n == len(members) && b.p.idleNow() {
		// Nothing went back to the workers, so none will become idle
		// again: a batch that gathered during this flush is flushed
		// here rather than left to linger.
		b.engineIdle()
	}
	if !reuse {
		reqs = nil
	}
	b.recycle(members, reqs)
	b.signal()
}

// failAll clears what flush set on every member: the flush failed as a
// whole.
func failAll[T any](reqs []Request[T]) {
	for i := range reqs {
		reqs[i].Err = nil
	}
}

// resume sends a member on to the workers.
func (b *Batcher[T]) resume(m member[T]) {
	b.observeResumed(m)
	b.p.resume(m.rec)
}

func (b *Batcher[T]) observeResumed(m member[T]) {
	if obs := b.p.obs; obs != nil {
		r := &m.rec.req
		obs.Observe(Event{Kind: Resumed, Request: r.ID(), Group: m.rec.group.id, Ctx: r.Ctx,
			Batch: b.cfg.name, Duration: nanos(clock() - m.parked), Err: r.Err})
	}
}

// spareRequests returns a slice of n requests for a flush, reused from an
// earlier flush when it can be: flush owns it only during the call.
func (b *Batcher[T]) spareRequests(n int) []Request[T] {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, s := range b.spareReqs {
		if cap(s) >= n {
			b.spareReqs = slices.Delete(b.spareReqs, i, i+1)
			return s[:n]
		}
	}
	return make([]Request[T], n)
}

// recycle keeps a flushed batch's slices for later batches, at most a
// few; reqs may be nil (not to be reused).
func (b *Batcher[T]) recycle(members []member[T], reqs []Request[T]) {
	clear(members[:cap(members)]) // drop the references: the requests are out
	clear(reqs[:cap(reqs)])
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.spareMembers) <= b.cfg.maxFlushes {
		b.spareMembers = append(b.spareMembers, members[:0])
	}
	if reqs != nil && len(b.spareReqs) <= b.cfg.maxFlushes {
		b.spareReqs = append(b.spareReqs, reqs[:0])
	}
}

// call runs flush, turning a panic (in flush, or in the observer's
// FlushStarting) into the error of every member. An observer that is a
// FlushObserver gives the call its context, through ctx.
func (b *Batcher[T]) call(ctx *context.Context, reason FlushReason, ids []uint64, reqs []Request[T]) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = b.p.panicked(b.cfg.name+" flush", v)
			failAll(reqs) // a panic fails every member, whatever flush set
		}
	}()
	if fo, ok := b.p.obs.(FlushObserver); ok {
		*ctx = fo.FlushStarting(*ctx, b.cfg.name, reason, ids)
	}
	return b.flush(*ctx, reqs)
}

// engineIdle is called by a worker when nothing is running and nothing is
// queued: no request can join a pending batch, so flush it now rather than
// let it linger. While a flush of this batcher runs, pending batches keep
// gathering instead: the requests that flush resumes may join them, and
// its end makes the workers busy and then idle again.
func (b *Batcher[T]) engineIdle() {
	b.mu.Lock()
	reason := FlushIdle
	if b.closing {
		reason = FlushShutdown
	}
	if len(b.lingers) == 0 || (b.cfg.noIdle || b.running > 0 || len(b.ready) > 0) && !b.closing {
		b.mu.Unlock()
		return
	}
	b.closeAll(reason)
	b.mu.Unlock()
}

// engineClosing is called when Close begins: flush what is pending.
func (b *Batcher[T]) engineClosing() {
	b.mu.Lock()
	b.closing = true
	b.closeAll(FlushShutdown)
	b.mu.Unlock()
}

// engineClosed is called once every request is out: stop the dispatcher
// and wait for it and the flushes that are ending.
func (b *Batcher[T]) engineClosed() {
	close(b.quit)
	b.wg.Wait()
}

// stats and name serve the engine (parker).
func (b *Batcher[T]) stats() BatchStats { return b.Stats() }
func (b *Batcher[T]) name() string      { return b.cfg.name }
