package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// deadLetter is a message to dead-letter, and why.
type deadLetter struct {
	d     *delivery
	kind  string
	cause error
}

// deadLetter has d published to the dead-letter subject, then termed, by
// the dead-letter goroutine; it never waits. Without a dead-letter
// subject, d is termed at once.
func (r *run[T]) deadLetter(d *delivery, kind string, cause error) {
	if r.src.DeadLetter == "" {
		r.c.log.Warn("statepipe/jetstream: terminated", "msg", d.id(), "kind", kind, "reason", cause.Error(),
			"delivered", d.meta.NumDelivered)
		r.finish(d, action{kind: actTerm, reason: kind + ": " + cause.Error()})
		return
	}
	r.dead <- deadLetter{d: d, kind: kind, cause: cause} // never blocks: it has room for every message held
}

// deadLetters is the dead-letter goroutine: it publishes the dead
// letters that are ready together, awaits each ack until its own
// deadline, and terms each message whose dead letter is stored. A dead
// letter not stored leaves its message to be delivered again. It
// returns when dead is closed.
func (r *run[T]) deadLetters() {
	var batch []deadLetter
	var pubs []*publication
	for dl := range r.dead {
		batch = readReady(r.dead, append(batch[:0], dl))
		pubs = pubs[:0]
		for _, dl := range batch {
			d := dl.d
			m := letter(r.src.DeadLetter, d.msg.Data(), d.msg.Headers(), dl.kind, dl.cause.Error(), d.meta, d.msg.Subject())
			pubs = append(pubs, r.publish(d, m, r.deadStream, "dlq:"+r.msgID(d)))
		}
		for i, p := range pubs {
			dl := batch[i]
			_, err := r.await(p, r.deadStream)
			switch {
			case err == nil:
				r.c.log.Warn("statepipe/jetstream: dead-lettered", "msg", dl.d.id(), "kind", dl.kind, "reason", dl.cause.Error(),
					"delivered", dl.d.meta.NumDelivered, "subject", r.src.DeadLetter)
				r.finish(dl.d, action{kind: actTerm, reason: dl.kind + ": " + dl.cause.Error()})
			case r.work.Err() != nil && errors.Is(err, r.work.Err()):
				r.finish(dl.d, action{kind: actRelease})
			default:
				r.c.log.Error("statepipe/jetstream: dead letter not stored; the message will be delivered again",
					"msg", dl.d.id(), "kind", dl.kind, "reason", dl.cause.Error(), "err", err)
				r.finish(dl.d, action{kind: actRetry, delay: r.c.backoff(dl.d.meta.NumDelivered)})
			}
		}
		clear(batch)
		clear(pubs)
	}
}

// letter makes the dead letter of a message: its body and headers (less
// the ones that would make the dead-letter stream refuse it), and why.
func letter(subject string, data []byte, h nats.Header, kind, reason string, meta *jetstream.MsgMetadata, from string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = data
	for k, v := range h {
		if !strings.HasPrefix(k, "Nats-Expected-") && k != jetstream.MsgIDHeader {
			m.Header[k] = v
		}
	}
	m.Header.Set(HeaderReason, reason)
	m.Header.Set(HeaderKind, kind)
	m.Header.Set(HeaderStream, meta.Stream)
	m.Header.Set(HeaderConsumer, meta.Consumer)
	m.Header.Set(HeaderSequence, strconv.FormatUint(meta.Sequence.Stream, 10))
	m.Header.Set(HeaderSubject, from)
	m.Header.Set(HeaderDelivered, strconv.FormatUint(meta.NumDelivered, 10))
	return m
}

// advisorySubject is where the server announces the messages of a
// stream's consumers that reached MaxDeliver without being settled.
const advisorySubject = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."

// watchAdvisories dead-letters, with a goroutine of its own, the messages
// of the run's consumers that the server gave up on: their last delivery
// went to a process that died (or stopped) without settling it, so no
// process saw it fail. The processes on one consumer share the
// advisories (a queue group), so one handles each; if two do, the dead
// letter's message ID keeps one copy. It returns the function that stops
// it. Without a DeadLetter subject there is nothing to do: those
// messages are the server's to keep (see the package doc).
func (r *run[T]) watchAdvisories() (stop func()) {
	if r.src.DeadLetter == "" {
		return func() {}
	}
	info := r.stream.CachedInfo()
	subject, queue := advisorySubject+info.Config.Name+".", "statepipe_"+info.Config.Name+"_"
	if p := r.src.Partitions; p != nil {
		subject, queue = subject+"*", queue+p.Consumer.Durable
	} else {
		name := r.src.Consumer.CachedInfo().Name
		subject, queue = subject+name, queue+name
	}
	ch := make(chan *nats.Msg, 256)
	sub, err := r.src.JetStream.Conn().ChanQueueSubscribe(subject, queue, ch)
	if err != nil {
		r.c.log.Error("statepipe/jetstream: cannot watch the max-deliveries advisories; messages lost with their process on their last delivery stay in the stream",
			"subject", subject, "err", err)
		return func() {}
	}
	done := make(chan struct{})
	quit := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case m := <-ch:
				r.exhausted(m)
			case <-quit:
				return
			}
		}
	}()
	return func() {
		_ = sub.Unsubscribe()
		close(quit)
		<-done
	}
}

// advisory is the part of the server's max-deliveries advisory read here.
type advisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// exhausted dead-letters the message an advisory names, and removes it
// from a work-queue stream, where it would otherwise stay for good.
func (r *run[T]) exhausted(m *nats.Msg) {
	var adv advisory
	if err := json.Unmarshal(m.Data, &adv); err != nil || adv.StreamSeq == 0 {
		r.c.log.Warn("statepipe/jetstream: unreadable max-deliveries advisory", "err", err)
		return
	}
	if !r.ownsConsumer(adv.Consumer) {
		return
	}
	ctx, cancel := context.WithTimeout(r.work, r.c.pubTimeout)
	defer cancel()
	raw, err := r.stream.GetMsg(ctx, adv.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return // settled or removed meanwhile
	}
	if err != nil {
		r.c.log.Error("statepipe/jetstream: cannot read a message the server gave up on", "stream", adv.Stream, "seq", adv.StreamSeq, "err", err)
		return
	}
	meta := &jetstream.MsgMetadata{Stream: adv.Stream, Consumer: adv.Consumer, NumDelivered: adv.Deliveries,
		Sequence: jetstream.SequencePair{Stream: adv.StreamSeq}}
	reason := fmt.Sprintf("the server stopped delivering it after %d deliveries: the process holding the last one did not settle it", adv.Deliveries)
	l := letter(r.src.DeadLetter, raw.Data, raw.Header, KindExhausted, reason, meta, raw.Subject)
	l.Header.Set(jetstream.MsgIDHeader, "dlq:"+r.idPrefix+adv.Consumer+":"+strconv.FormatUint(adv.StreamSeq, 10))
	l.Header.Set(jetstream.ExpectedStreamHeader, r.deadStream)
	ack, err := r.src.JetStream.PublishMsg(ctx, l)
	if err == nil && ack.Stream != r.deadStream {
		err = fmt.Errorf("stored by stream %s, not %s", ack.Stream, r.deadStream)
	}
	if err != nil {
		r.c.log.Error("statepipe/jetstream: dead letter of a message the server gave up on not stored; it stays in the stream",
			"stream", adv.Stream, "seq", adv.StreamSeq, "err", err)
		return
	}
	if r.stream.CachedInfo().Config.Retention == jetstream.WorkQueuePolicy {
		if err := r.stream.DeleteMsg(ctx, adv.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			r.c.log.Warn("statepipe/jetstream: dead-lettered a message the server gave up on, but could not remove it", "seq", adv.StreamSeq, "err", err)
		}
	}
	r.src.counters.exhausted.Add(1)
	r.c.log.Warn("statepipe/jetstream: dead-lettered", "stream", adv.Stream, "seq", adv.StreamSeq, "kind", KindExhausted, "reason", reason)
}

// ownsConsumer reports whether consumer is one the run reads.
func (r *run[T]) ownsConsumer(consumer string) bool {
	if p := r.src.Partitions; p != nil {
		return p.owns(consumer)
	}
	return consumer == r.src.Consumer.CachedInfo().Name
}
