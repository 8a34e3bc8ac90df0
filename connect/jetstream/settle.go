package jetstream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/statepipe/statepipe"
)

// settleResults is Run's own goroutine: it settles requests as they come
// out, reports held messages in progress, and runs the drain. It returns
// when the group's Out is closed, or at the drain's deadline after
// calling cancelWork.
func (r *run[T]) settleResults(cancelWork context.CancelFunc) {
	tick := time.NewTicker(max(r.c.progressAfter/2, time.Millisecond))
	defer tick.Stop()
	stopped := r.stop.Done()
	var deadline <-chan time.Time
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
		case <-tick.C:
			r.reportProgress()
		case <-stopped:
			stopped = nil
			t := time.NewTimer(r.c.drainTimeout)
			defer t.Stop()
			deadline = t.C
		case <-deadline:
			cancelWork()
			// What is already out is settled as usual; releaseAll naks
			// the rest once the fetcher has ended.
			if chunk = readReady(out, chunk[:0]); len(chunk) > 0 {
				r.settleChunk(chunk)
			}
			return
		}
	}
}

// maxChunk bounds the results settled together: their Sink publishes are
// under way at once.
const maxChunk = 256

// readReady appends to chunk the results Out has ready, without waiting.
func readReady[T any](out <-chan statepipe.Request[T], chunk []statepipe.Request[T]) []statepipe.Request[T] {
	for len(chunk) < maxChunk {
		select {
		case req, ok := <-out:
			if !ok {
				return chunk
			}
			chunk = append(chunk, req)
		default:
			return chunk
		}
	}
	return chunk
}

// settleChunk settles results: the Sink publishes the successes all at
// once, then each message is acked, naked or dead-lettered.
func (r *run[T]) settleChunk(chunk []statepipe.Request[T]) {
	var pubs []*publication
	var deadline <-chan time.Time // one for the chunk: the publishes run at once
	if sk := r.src.Sink; sk != nil {
		pubs = sk.publishAll(r, chunk)
		t := time.NewTimer(r.c.pubTimeout)
		defer t.Stop()
		deadline = t.C
	}
	for i, req := range chunk {
		d := deliveryOf(req.Ctx)
		if d == nil {
			continue // not ours: cannot happen, the group is the Source's own
		}
		err := req.Err
		if err == nil && pubs != nil {
			var dup bool
			if dup, err = pubs[i].wait(deadline); err == nil {
				r.src.counters.published.Add(1)
				if dup {
					r.src.counters.duplicates.Add(1)
				}
			}
		}
		r.settle(d, err)
	}
}

// settle acks, naks or dead-letters d by the outcome of its request.
func (r *run[T]) settle(d *delivery, err error) {
	ct := &r.src.counters
	switch {
	case err == nil:
		if !r.settled(d) {
			return
		}
		if e := d.msg.Ack(); e != nil {
			r.c.log.Warn("statepipe/jetstream: ack failed; the message will be redelivered", "msg", d.id(), "err", e)
			return
		}
		ct.acked.Add(1)
	case r.work.Err() != nil && errors.Is(err, r.work.Err()):
		r.release(d) // stopped by the drain's deadline: not the message's fault
	case errors.Is(err, ErrPermanent):
		r.deadLetter(d, KindPermanent, err)
	case r.c.maxDeliver > 0 && d.meta.NumDelivered >= uint64(r.c.maxDeliver):
		r.deadLetter(d, KindMaxDeliver, err)
	default:
		r.retry(d, err)
	}
}

// retry naks d with the backoff's delay.
func (r *run[T]) retry(d *delivery, cause error) {
	if !r.settled(d) {
		return
	}
	delay := r.c.backoff(d.meta.NumDelivered)
	if e := d.msg.NakWithDelay(delay); e != nil {
		r.c.log.Warn("statepipe/jetstream: nak failed; the message will be redelivered after AckWait", "msg", d.id(), "err", e)
		return
	}
	r.src.counters.retried.Add(1)
	r.c.log.Debug("statepipe/jetstream: retrying", "msg", d.id(), "delivered", d.meta.NumDelivered, "in", delay, "err", cause)
}

// release naks d without delay, for another process to take it now.
func (r *run[T]) release(d *delivery) {
	if !r.settled(d) {
		return
	}
	if e := d.msg.Nak(); e != nil {
		r.c.log.Warn("statepipe/jetstream: nak failed; the message will be redelivered after AckWait", "msg", d.id(), "err", e)
		return
	}
	r.src.counters.released.Add(1)
}

// releaseAll naks every message still held: the drain's deadline passed
// with their requests still inside.
func (r *run[T]) releaseAll() {
	r.mu.Lock()
	left := make([]*delivery, 0, len(r.held))
	for d := range r.held {
		left = append(left, d)
	}
	r.mu.Unlock()
	for _, d := range left {
		r.release(d)
	}
}

// reportProgress tells the server that the messages held for a while are
// still being worked on, so that AckWait does not expire for them.
func (r *run[T]) reportProgress() {
	now := time.Now()
	var due []*delivery
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
}

// deadLetter publishes d to the dead-letter subject with the reason and
// terms it. If the dead letter cannot be stored, d is naked with a delay
// instead: it is never termed without a trace.
func (r *run[T]) deadLetter(d *delivery, kind string, cause error) {
	reason := cause.Error()
	subject := r.src.DeadLetter
	if subject != "" {
		m := nats.NewMsg(subject)
		m.Data = d.msg.Data()
		for k, v := range d.msg.Headers() {
			m.Header[k] = v
		}
		m.Header.Set(HeaderReason, reason)
		m.Header.Set(HeaderKind, kind)
		m.Header.Set(HeaderStream, d.meta.Stream)
		m.Header.Set(HeaderConsumer, d.meta.Consumer)
		m.Header.Set(HeaderSequence, fmt.Sprint(d.meta.Sequence.Stream))
		m.Header.Set(HeaderSubject, d.msg.Subject())
		m.Header.Set(HeaderDelivered, fmt.Sprint(d.meta.NumDelivered))
		m.Header.Set(jetstream.MsgIDHeader, "dlq:"+d.id()) // once, even if termed twice
		m.Header.Del(jetstream.ExpectedStreamHeader)
		m.Header.Del(jetstream.ExpectedLastSeqHeader)
		m.Header.Del(jetstream.ExpectedLastSubjSeqHeader)
		m.Header.Del(jetstream.ExpectedLastSubjSeqSubjHeader)
		m.Header.Del(jetstream.ExpectedLastMsgIDHeader)
		ctx, cancel := context.WithTimeout(context.Background(), r.c.pubTimeout)
		_, err := r.src.JetStream.PublishMsg(ctx, m)
		cancel()
		if err != nil {
			r.c.log.Error("statepipe/jetstream: dead letter not stored; retrying the message later",
				"msg", d.id(), "kind", kind, "reason", reason, "err", err)
			r.retry(d, err)
			return
		}
	}
	if !r.settled(d) {
		return
	}
	if err := d.msg.TermWithReason(kind + ": " + reason); err != nil {
		r.c.log.Warn("statepipe/jetstream: term failed; the message will be redelivered", "msg", d.id(), "err", err)
		return
	}
	r.src.counters.deadLettered.Add(1)
	r.c.log.Warn("statepipe/jetstream: dead-lettered", "msg", d.id(), "kind", kind, "reason", reason,
		"delivered", d.meta.NumDelivered, "subject", subject)
}
