package kafka

import (
	"container/heap"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/statepipe/statepipe"
	"github.com/statepipe/statepipe/connect"
	"github.com/twmb/franz-go/pkg/kgo"
)

// settleResults is Run's own goroutine: it settles requests as they come
// out, runs retries when they are due, and runs the drain. It returns
// once the group's Out is closed and nothing is being produced, or at the
// drain's deadline after calling cancelWork.
func (r *run[T]) settleResults(cancelWork context.CancelFunc) {
	stopped := r.stop.Done()
	var deadline <-chan time.Time
	out := r.g.Out()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		if out == nil && r.producingNone() {
			return
		}
		select {
		case req, ok := <-out:
			if !ok {
				out = nil
				continue
			}
			r.settle(req)
		case <-retry.C:
			r.retryDue()
			r.resetRetry(retry)
		case <-r.wakeSettle:
			r.resetRetry(retry)
		case <-stopped:
			stopped = nil
			r.beginDrain()
			t := time.NewTimer(r.c.drainTimeout)
			defer t.Stop()
			deadline = t.C
		case <-deadline:
			cancelWork()
			r.mu.Lock()
			for _, p := range r.parts {
				for _, d := range p.held {
					r.drop(d)
				}
			}
			r.mu.Unlock()
			return
		}
	}
}

func (r *run[T]) producingNone() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.producing == 0
}

// beginDrain stops submitting and retrying: what is queued or waiting
// for a retry is dropped, left uncommitted for the next owner.
func (r *run[T]) beginDrain() {
	r.mu.Lock()
	r.stopping = true
	for _, e := range r.retries {
		r.drop(e.d)
	}
	r.retries = nil
	r.mu.Unlock()
	wake(r.wakeSubmit)
}

// settle takes one request out of the group.
func (r *run[T]) settle(req statepipe.Request[T]) {
	d := deliveryOf(req.Ctx)
	if d == nil {
		return // not ours: cannot happen, the group is the Source's own
	}
	if req.Err == nil && r.src.Sink != nil {
		r.produceResult(d, req.Data)
		return
	}
	r.outcome(d, req.Err)
}

// outcome settles d, which has left the pipeline (or the Sink) with err.
func (r *run[T]) outcome(d *delivery, err error) {
	v, kind := connect.Judge(err)
	r.mu.Lock()
	p := d.part
	r.notBusy(d)
	dead := false
	switch {
	case d.stage == dropped || p.ctx.Err() != nil:
		r.drop(d) // given up: a lost partition, a drain's deadline
	case v == connect.Done:
		r.finish(d)
	case p.revoked || (r.stopping && v == connect.Redeliver):
		r.drop(d) // for the next owner to run
	case v == connect.Redeliver && d.attempt < r.c.maxAttempts:
		r.src.counters.retried.Add(1)
		r.wait(d, r.c.backoff(d.attempt), "", "")
		r.c.log.Debug("statepipe/kafka: retrying", "record", recordName(d.rec), "attempt", d.attempt, "err", err)
	default:
		if v == connect.Redeliver {
			kind = connect.KindExhausted
		}
		dead = true
	}
	p.markDrained()
	r.mu.Unlock()
	if dead {
		r.deadLetter(d, kind, err.Error())
	}
}

// notBusy undoes the bookkeeping of a run through the pipeline or a
// produce. Called with r.mu held.
func (r *run[T]) notBusy(d *delivery) {
	d.part.busy--
	if d.producing {
		d.producing = false
		r.producing--
		wake(r.wakeSettle)
	}
}

// startProducing marks d as being produced for. Called with r.mu held;
// it reports false if d was given up.
func (r *run[T]) startProducing(d *delivery) bool {
	if d.stage == dropped || d.part.ctx.Err() != nil {
		r.drop(d)
		return false
	}
	d.stage = producing
	d.producing = true
	r.producing++
	return true
}

// finish marks d finished, moves its partition's commit point and lets
// the next record of its lane go. Called with r.mu held.
func (r *run[T]) finish(d *delivery) {
	if d.stage == finished || d.stage == dropped {
		return
	}
	r.let(d, false)
	d.stage = finished
	r.src.counters.done.Add(1)
	d.part.advance()
	// Only the offsets are needed from here on.
	d.rec.Key, d.rec.Value, d.rec.Headers = nil, nil, nil
}

// drop gives d up unfinished: it stays in its partition's held records,
// so that no commit passes it, until the partition is given up. Called
// with r.mu held.
func (r *run[T]) drop(d *delivery) {
	if d.stage == finished || d.stage == dropped {
		return
	}
	r.let(d, true)
	d.stage = dropped
	r.src.counters.released.Add(1)
	r.round.dropped++
}

// let releases d's room and, if it is its lane's head, the lane; a
// dropped head drops the records behind it. Called with r.mu held.
func (r *run[T]) let(d *delivery, dropping bool) {
	p := d.part
	p.unfinished--
	p.bytes -= d.size()
	r.held--
	r.heldBytes -= d.size()
	if l := d.lane; l != nil {
		d.lane = nil
		if d.stage != queued || !contains(l.wait, d) {
			r.nextInLane(p, l, dropping)
		}
	}
	r.resumeIfRoom(p)
	wake(r.wakePoll)
}

func contains(ds []*delivery, d *delivery) bool {
	for _, x := range ds {
		if x == d {
			return true
		}
	}
	return false
}

// nextInLane lets the next record of l go once its head is done; if the
// head was dropped (or the partition is going), those behind it are
// dropped too, since they may not run before it. Called with r.mu held.
func (r *run[T]) nextInLane(p *partition, l *lane, headDropped bool) {
	if headDropped || p.revoked || r.stopping {
		wait := l.wait
		l.wait = nil
		for _, d := range wait {
			d.lane, d.behind = nil, false
			r.drop(d)
		}
	}
	for len(l.wait) > 0 && l.wait[0].stage == dropped {
		l.wait[0] = nil
		l.wait = l.wait[1:]
	}
	if len(l.wait) == 0 {
		l.busy = false
		if p.lanes[l.key] == l {
			delete(p.lanes, l.key)
		}
		return
	}
	n := l.wait[0]
	l.wait[0] = nil
	l.wait = l.wait[1:]
	n.behind = false
	r.queue = append(r.queue, n)
	wake(r.wakeSubmit)
}

// wait parks d until its retry is due: a new run through the pipeline,
// or with kind set another try at its dead letter. Called with r.mu held.
func (r *run[T]) wait(d *delivery, delay time.Duration, kind, reason string) {
	d.stage = waiting
	d.deadKind, d.deadReason = kind, reason
	heap.Push(&r.retries, retryEntry{due: time.Now().Add(delay), d: d})
	wake(r.wakeSettle)
}

// retryDue runs the retries that are due.
func (r *run[T]) retryDue() {
	now := time.Now()
	var dead []*delivery
	r.mu.Lock()
	for len(r.retries) > 0 && !r.retries[0].due.After(now) {
		d := heap.Pop(&r.retries).(retryEntry).d
		switch {
		case d.stage != waiting:
		case d.deadKind != "":
			dead = append(dead, d)
		default:
			r.enqueue(d) // a lane's head: straight to the queue
		}
	}
	r.mu.Unlock()
	for _, d := range dead {
		r.deadLetter(d, d.deadKind, d.deadReason)
	}
}

func (r *run[T]) resetRetry(t *time.Timer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.retries) == 0 {
		t.Stop()
		return
	}
	t.Reset(max(0, time.Until(r.retries[0].due)))
}

// produceResult produces d's result with the Sink; d is finished once
// Kafka acknowledged it.
func (r *run[T]) produceResult(d *delivery, data T) {
	sk := r.src.Sink
	body, err := sk.encode(data)
	if err != nil {
		r.outcome(d, connect.Permanent(fmt.Errorf("sink: encode: %w", err)))
		return
	}
	r.mu.Lock()
	ok := r.startProducing(d)
	if !ok {
		r.notBusy(d)
		d.part.markDrained()
	}
	r.mu.Unlock()
	if !ok {
		return
	}
	rec := &kgo.Record{Topic: sk.Topic, Key: d.rec.Key, Value: body, Headers: origin(d.rec)}
	r.produce(d.part.ctx, rec, func(_ *kgo.Record, err error) {
		if err != nil {
			if r.failRound(d, err) {
				return
			}
			r.c.log.Warn("statepipe/kafka: result not produced; retrying the record", "record", recordName(d.rec), "err", err)
			r.outcome(d, fmt.Errorf("sink: produce: %w", err))
			return
		}
		r.src.counters.published.Add(1)
		r.outcome(d, nil)
	})
}

// deadLetter produces d to the dead-letter topic with the reason, and
// finishes it once Kafka acknowledged it; if that fails, it tries again
// after a backoff, so that a record is never committed without a trace.
func (r *run[T]) deadLetter(d *delivery, kind, reason string) {
	topic := r.src.DeadLetter
	r.mu.Lock()
	if topic == "" {
		r.finish(d)
		d.part.markDrained()
		r.mu.Unlock()
		r.src.counters.deadLettered.Add(1)
		r.c.log.Warn("statepipe/kafka: dead-lettered (no DeadLetter topic)", "record", recordName(d.rec), "kind", kind, "reason", reason)
		return
	}
	if !r.startProducing(d) {
		d.part.markDrained()
		r.mu.Unlock()
		return
	}
	d.part.busy++
	attempt := d.attempt
	r.mu.Unlock()
	rec := &kgo.Record{Topic: topic, Key: d.rec.Key, Value: d.rec.Value}
	rec.Headers = append(rec.Headers, d.rec.Headers...)
	rec.Headers = append(rec.Headers,
		kgo.RecordHeader{Key: connect.HeaderReason, Value: []byte(reason)},
		kgo.RecordHeader{Key: connect.HeaderKind, Value: []byte(kind)},
		kgo.RecordHeader{Key: connect.HeaderDelivered, Value: []byte(strconv.Itoa(attempt))},
	)
	rec.Headers = append(rec.Headers, origin(d.rec)...)
	name := recordName(d.rec)
	r.produce(d.part.ctx, rec, func(_ *kgo.Record, err error) {
		if err != nil && r.failRound(d, err) {
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		r.notBusy(d)
		defer d.part.markDrained()
		switch {
		case d.stage == dropped || d.part.ctx.Err() != nil:
			r.drop(d)
		case err != nil:
			r.c.log.Error("statepipe/kafka: dead letter not produced; trying again", "record", name, "kind", kind, "err", err)
			r.wait(d, r.c.backoff(attempt), kind, reason)
		default:
			r.finish(d)
			r.src.counters.deadLettered.Add(1)
			r.c.log.Warn("statepipe/kafka: dead-lettered", "record", name, "kind", kind, "reason", reason, "topic", topic)
		}
	})
}

// failRound fails the open transaction after a failed produce in it, and
// drops d: the transaction aborts and its records run again. It reports
// false outside a transaction.
func (r *run[T]) failRound(d *delivery, err error) bool {
	if r.sess == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notBusy(d)
	if r.round.failed == nil {
		r.round.failed = err
	}
	r.drop(d)
	d.part.markDrained()
	return true
}

func (r *run[T]) produce(ctx context.Context, rec *kgo.Record, promise func(*kgo.Record, error)) {
	if r.sess != nil {
		r.sess.Produce(ctx, rec, promise)
		return
	}
	r.cl().Produce(ctx, rec, promise)
}

// origin are the headers that name where a record came from.
func origin(rec *kgo.Record) []kgo.RecordHeader {
	return []kgo.RecordHeader{
		{Key: HeaderTopic, Value: []byte(rec.Topic)},
		{Key: HeaderPartition, Value: []byte(strconv.Itoa(int(rec.Partition)))},
		{Key: HeaderOffset, Value: []byte(strconv.FormatInt(rec.Offset, 10))},
	}
}

func recordName(rec *kgo.Record) string {
	return fmt.Sprintf("%s/%d@%d", rec.Topic, rec.Partition, rec.Offset)
}

// retryEntry is a record waiting for its retry.
type retryEntry struct {
	due time.Time
	d   *delivery
}

// retryHeap orders the waiting records by when they are due.
type retryHeap []retryEntry

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h retryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *retryHeap) Push(x any)        { *h = append(*h, x.(retryEntry)) }
func (h *retryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = retryEntry{}
	*h = old[:len(old)-1]
	return e
}
