package statepipe

import (
	"context"
	"slices"
	"time"
)

// due queues bt for a flush, open to more requests until a runner takes
// it. b.mu is held.
func (b *Batcher[T]) due(bt *batch[T], reason FlushReason) {
	if bt.queued {
		return
	}
	bt.queued, bt.reason = true, reason
	b.queue.Push(bt)
	b.startFlush()
}

// full closes bt, which takes no more requests, and queues it for a flush
// if it is not queued yet. b.mu is held.
func (b *Batcher[T]) full(bt *batch[T], reason FlushReason) {
	bt.closed = true
	b.index.del(bt)
	if !bt.queued {
		b.due(bt, reason)
	}
	bt.reason = reason
}

// startFlush gets a runner for a batch just queued: a waiting one, or a
// new one while fewer than MaxFlushes run. Otherwise the batch waits in
// queue for the first runner that is done. b.mu is held.
func (b *Batcher[T]) startFlush() {
	switch {
	case b.waiting > 0:
		b.waiting-- // claimed: it finds the batch when it wakes
		b.claim <- struct{}{}
	case b.runners < b.cfg.maxFlushes:
		b.runners++
		b.wg.Add(1)
		go engineGoroutine(&b.wg, b.runner)
	}
}

// runner flushes queued batches, one at a time, until engineClosed. It
// runs on a goroutine of the engine, so that Close from flush is refused.
// A claim wakes it for a batch; it may find none (another runner took
// it), and waits again.
func (b *Batcher[T]) runner() {
	var cancelled []member[T]
	returned := false
	defer func() {
		if !returned {
			// flush called runtime.Goexit and took this goroutine with
			// it; the batch was settled. Keep the runner count.
			b.mu.Lock()
			b.busy--
			b.runners--
			if b.queue.Len() > 0 {
				b.startFlush()
			}
			b.mu.Unlock()
		}
	}()
	b.mu.Lock()
	for {
		bt := b.next()
		if bt == nil {
			b.waiting++
			b.mu.Unlock()
			select {
			case <-b.claim:
			case <-b.quit: // every request is out: nothing is queued
				returned = true
				return
			}
			b.mu.Lock()
			continue
		}
		var members []member[T]
		members, cancelled = b.take(bt, cancelled[:0])
		b.busy++
		b.mu.Unlock()
		for i, m := range cancelled { // outside the lock: resume calls the observer
			b.resume(m)
			cancelled[i] = member[T]{}
		}
		if len(members) > 0 {
			b.run(bt, members)
		}
		b.mu.Lock()
		b.busy--
	}
}

// next takes the first queued batch that still has members, and closes
// it to joins. b.mu is held.
func (b *Batcher[T]) next() *batch[T] {
	for {
		bt, ok := b.queue.Pop()
		if !ok {
			return nil
		}
		if len(bt.members) > 0 {
			if !bt.closed {
				bt.closed = true
				b.index.del(bt)
			}
			if b.size == nil && len(bt.members) >= b.cfg.maxItems {
				bt.reason = FlushSize // filled while it waited for a slot
			}
			return bt
		}
	}
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
			// The watcher has fired and waits for b.mu; it will find its
			// member gone (ids are never reused) and leave it to us.
			m.rec.req.Err = m.rec.req.Ctx.Err()
			b.counters.cancel(clock() - m.parked)
			cancelled = append(cancelled, m)
			continue
		}
		kept = append(kept, m)
	}
	bt.members = nil
	return kept, cancelled
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
		parkedNext := r.Next
		r.Data, r.Err, r.Next = reqs[i].Data, reqs[i].Err, reqs[i].Next
		if r.Err == nil && err != nil {
			r.Err = err
		}
		if r.Err != nil {
			failed++
			if _, marked := retryable(r.Err); marked {
				r.Next = parkedNext // a retry goes on from where it parked
			}
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
	b.mu.Unlock()

	// Members with nowhere to go are delivered together; the rest go back
	// to the workers. They are counted first, so that a consumer that has
	// them all sees them in Stats.
	var tally outTally
	finished := members[:0] // in place: a member resumed is not looked at again
	resumed, retried := 0, 0
	for _, m := range members {
		r := &m.rec.req
		switch {
		case r.Err != nil && b.p.retries.retry(m.rec, b.cfg.name, b):
			retried++ // it joins a later batch after its backoff
		case r.Next == nil || r.Err != nil:
			b.observeResumed(m)
			tally.add(b.p.leaving(m.rec, r))
			finished = append(finished, m)
		default:
			b.resume(m)
			resumed++
		}
	}
	if retried > 0 {
		b.mu.Lock()
		b.counters.retried += uint64(retried)
		b.mu.Unlock()
	}
	b.p.countOut(b.node, &tally)
	// Those that finish go out together: one update of the machine's count.
	for _, m := range finished {
		b.p.handOut(m.rec, m.rec.req)
	}
	if len(finished) > 0 {
		b.p.release(int64(len(finished)))
	}
	if resumed == 0 {
		// Nothing went back to the workers, so none may go to wait
		// again: a batch that gathered during this flush, here or in
		// another batcher, is due now if the engine is idle, rather than
		// left to linger.
		b.p.tellIfIdle()
	}
	if !reuse {
		reqs = nil
	}
	b.recycle(bt, members, reqs)
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

// recycle keeps a flushed batch and its slices for later batches, as many
// as can be in use at once; reqs may be nil (not to be reused).
func (b *Batcher[T]) recycle(bt *batch[T], members []member[T], reqs []Request[T]) {
	clear(members[:cap(members)]) // drop the references: the requests are out
	clear(reqs[:cap(reqs)])
	b.mu.Lock()
	defer b.mu.Unlock()
	keep := b.cfg.maxFlushes + 1
	if len(b.spareBatches) < keep {
		*bt = batch[T]{}
		if b.size == nil {
			bt.members = members[:0] // a batch of one slice, reserved at MaxItems
		}
		b.spareBatches = append(b.spareBatches, bt)
	}
	if reqs != nil && len(b.spareReqs) < keep {
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
