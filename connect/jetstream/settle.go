package jetstream

import (
	"errors"
	"time"

	"github.com/statepipe/statepipe"
	"github.com/statepipe/statepipe/connect"
)

// settleResults is Run's own goroutine: it takes requests as they come
// out, starts the publishes of their results and settles the others. It
// returns when the group's Out is closed, or at the drain's deadline.
func (r *run[T]) settleResults() {
	out := r.g.Out()
	chunk := make([]statepipe.Request[T], 0, maxChunk)
	for {
		select {
		case req, ok := <-out:
			if !ok {
				return
			}
			chunk = readReady(out, append(chunk[:0], req))
			r.settleChunk(chunk)
			clear(chunk)
		case <-r.work.Done():
			// What is already out is settled as usual; releaseAll naks
			// the rest.
			if chunk = readReady(out, chunk[:0]); len(chunk) > 0 {
				r.settleChunk(chunk)
			}
			return
		}
	}
}

// maxChunk bounds the results taken from Out together.
const maxChunk = 256

// readReady appends to chunk what ch has ready, without waiting.
func readReady[E any](ch <-chan E, chunk []E) []E {
	for len(chunk) < maxChunk {
		select {
		case e, ok := <-ch:
			if !ok {
				return chunk
			}
			chunk = append(chunk, e)
		default:
			return chunk
		}
	}
	return chunk
}

// settleChunk starts the Sink's publishes of the successes, for
// confirmResults to await, and settles the failures.
func (r *run[T]) settleChunk(chunk []statepipe.Request[T]) {
	sk := r.src.Sink
	for _, req := range chunk {
		d := deliveryOf(req.Ctx)
		if d == nil {
			continue // not ours: cannot happen, the group is the Source's own
		}
		if req.Err != nil || sk == nil {
			r.judge(d, req.Err)
			continue
		}
		p := sk.publish(r, d, req.Data)
		if p.err != nil && p.future == nil {
			r.judge(d, p.err)
			continue
		}
		r.results <- p // never blocks: it has room for every message held
	}
}

// confirmResults awaits the stream's ack of each result, in the order
// they were published, each until its own deadline, and settles its
// message. It returns when results is closed.
func (r *run[T]) confirmResults() {
	ct := &r.src.counters
	for p := range r.results {
		dup, err := r.await(p, r.resultStream)
		if err == nil {
			ct.published.Add(1)
			if dup {
				ct.duplicates.Add(1)
			}
		}
		r.judge(p.d, err)
	}
}

// judge settles d by the outcome of its request (see Run).
func (r *run[T]) judge(d *delivery, err error) {
	v, kind := connect.Judge(err)
	switch {
	case v == connect.Done:
		r.finish(d, action{kind: actAck})
	case r.work.Err() != nil && errors.Is(err, r.work.Err()):
		r.finish(d, action{kind: actRelease}) // stopped by the drain's deadline: not the message's fault
	case v == connect.DeadLetter:
		r.deadLetter(d, kind, err)
	case r.c.maxDeliver > 0 && d.meta.NumDelivered >= uint64(r.c.maxDeliver):
		r.deadLetter(d, KindExhausted, err)
	default:
		r.retry(d, err)
	}
}

// retry naks d with the backoff's delay.
func (r *run[T]) retry(d *delivery, cause error) {
	delay := r.c.backoff(d.meta.NumDelivered)
	r.c.log.Debug("statepipe/jetstream: retrying", "msg", d.id(), "delivered", d.meta.NumDelivered, "in", delay,
		"retries_exhausted", connect.RetryExhausted(cause), "err", cause)
	r.finish(d, action{kind: actRetry, delay: delay})
}

// An action settles a message.
type action struct {
	kind   int
	delay  time.Duration // actRetry
	reason string        // actTerm
}

const (
	actAck     = iota // processed
	actRetry          // nak with a delay: failed for now
	actRelease        // nak at once: given back unprocessed
	actTerm           // dead-lettered
)

// finish settles d with a. The messages of an ordered lane are settled in
// the order they were fetched: a settles d once every message fetched
// before it on its lane is settled, so that what a process leaves
// unsettled, if it dies, is always the end of the lane.
func (r *run[T]) finish(d *delivery, a action) {
	l := d.lane
	if !l.ordered {
		r.apply(d, a)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	d.act = &a
	for len(l.fifo) > 0 && l.fifo[0].act != nil {
		next := l.fifo[0]
		l.fifo[0] = nil
		l.fifo = l.fifo[1:]
		r.apply(next, *next.act)
	}
	if len(l.fifo) == 0 {
		l.fifo = nil // let the array go
	}
}

// apply acks, naks or terms d, unless it was settled already.
func (r *run[T]) apply(d *delivery, a action) {
	if !r.settled(d) {
		return
	}
	ct := &r.src.counters
	var err error
	switch a.kind {
	case actAck:
		if err = d.msg.Ack(); err == nil {
			ct.acked.Add(1)
			if d.lane.ordered {
				d.lane.lastAcked.Store(d.meta.Sequence.Stream)
			}
		}
	case actRetry:
		if err = d.msg.NakWithDelay(a.delay); err == nil {
			ct.retried.Add(1)
		}
	case actRelease:
		if err = d.msg.Nak(); err == nil {
			ct.released.Add(1)
		}
	case actTerm:
		if err = d.msg.TermWithReason(a.reason); err == nil {
			ct.deadLettered.Add(1)
		}
	}
	if err != nil {
		r.c.log.Warn("statepipe/jetstream: settling failed; the message will be redelivered after AckWait",
			"msg", d.id(), "action", a.kind, "err", err)
	}
}

// releaseAll naks every message still held: the drain's deadline passed
// with their requests still inside, or their publishes unanswered.
func (r *run[T]) releaseAll() {
	r.mu.Lock()
	left := make([]*delivery, 0, len(r.held))
	for d := range r.held {
		left = append(left, d)
	}
	r.mu.Unlock()
	for _, d := range left {
		r.finish(d, action{kind: actRelease})
	}
}

// reportProgress is a goroutine of its own: it tells the server that
// the messages held for a while are still being worked on, so that
// AckWait does not expire for them, until the run ends.
func (r *run[T]) reportProgress() {
	tick := time.NewTicker(max(r.c.progressAfter/2, time.Millisecond))
	defer tick.Stop()
	var due []*delivery
	for {
		select {
		case <-tick.C:
		case <-r.quit:
			return
		}
		now := time.Now()
		due = due[:0]
		r.mu.Lock()
		for d := range r.held {
			if now.Sub(d.touched) >= r.c.progressAfter {
				d.touched = now
				due = append(due, d)
			}
		}
		r.mu.Unlock()
		for _, d := range due {
			if err := d.msg.InProgress(); err != nil {
				r.c.log.Warn("statepipe/jetstream: in-progress report failed", "msg", d.id(), "err", err)
				continue
			}
			r.src.counters.inProgress.Add(1)
		}
		clear(due)
	}
}
