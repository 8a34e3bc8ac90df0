package jetstream

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Sink publishes the result of each successful request to a subject
// before the [Source] acks its message.
//
// Every delivery of a message publishes its result with the same message
// ID (Nats-Msg-Id), so the stream that captures Subject stores a
// redelivered message's result once, provided its Duplicates window is
// longer than the time between the first delivery and the last
// redelivery ([Setup] checks it). The ID names the source stream, when
// that stream was created, the consumer and the message's sequence: a
// stream deleted and made again, or a second consumer of the same stream
// writing to the same results, gets results of its own instead of
// duplicates of the earlier ones. Each publish also says which stream
// must store it (Nats-Expected-Stream: the one that captured Subject when
// Run started), and the ack is checked to come from it.
//
// The result carries the input message's headers, except NATS's own
// (Nats-*): trace context (traceparent, tracestate, baggage), a
// correlation ID and the like go from input to result.
//
// Results are published asynchronously as they come out, and each
// message is acked once the stream has confirmed its own result. A result
// the stream does not confirm within the Source's PublishTimeout of its
// publish fails like a retryable stage error; one that Encode rejects (or
// panics on) fails permanently.
type Sink[T any] struct {
	// Subject receives the results; required. A stream other than the
	// consumer's must capture it.
	Subject string
	// Encode makes a result's body; required.
	Encode func(T) ([]byte, error)
}

// publication is one publish under way: its future, or why there is none.
type publication struct {
	d        *delivery
	future   jetstream.PubAckFuture
	err      error
	deadline time.Time
}

// publish starts the publish of d's result v.
func (sk *Sink[T]) publish(r *run[T], d *delivery, v T) *publication {
	body, err := sk.encode(v)
	if err != nil {
		return &publication{d: d, err: Permanent(fmt.Errorf("sink: encode: %w", err))}
	}
	m := nats.NewMsg(sk.Subject)
	m.Data = body
	for k, v := range d.msg.Headers() {
		if !strings.HasPrefix(k, "Nats-") {
			m.Header[k] = v
		}
	}
	return r.publish(d, m, r.resultStream, r.msgID(d))
}

// publish starts publishing m with message ID id, to be stored by stream.
func (r *run[T]) publish(d *delivery, m *nats.Msg, stream, id string) *publication {
	m.Header.Set(jetstream.MsgIDHeader, id)
	m.Header.Set(jetstream.ExpectedStreamHeader, stream)
	p := &publication{d: d, deadline: time.Now().Add(r.c.pubTimeout)}
	p.future, p.err = r.src.JetStream.PublishMsgAsync(m)
	if p.err != nil {
		p.future, p.err = nil, fmt.Errorf("publish to %s: %w", m.Subject, p.err)
	}
	return p
}

func (sk *Sink[T]) encode(v T) (b []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return sk.Encode(v)
}

// errPublishTimeout is the failure of a publish the stream did not
// confirm in time.
var errPublishTimeout = errors.New("statepipe/jetstream: no ack from the stream in time")

// await waits for the ack of p from stream, until p's own deadline or
// the drain's, and returns whether the stream had the message already,
// or the failure.
func (r *run[T]) await(p *publication, stream string) (duplicate bool, err error) {
	if p.err != nil {
		return false, p.err
	}
	check := func(ack *jetstream.PubAck) (bool, error) {
		if ack.Stream != stream {
			return false, fmt.Errorf("statepipe/jetstream: stored by stream %s, not %s", ack.Stream, stream)
		}
		return ack.Duplicate, nil
	}
	select { // an answer already there wins over a deadline passed
	case ack := <-p.future.Ok():
		return check(ack)
	case err := <-p.future.Err():
		return false, fmt.Errorf("publish: %w", err)
	default:
	}
	t := time.NewTimer(time.Until(p.deadline))
	defer t.Stop()
	select {
	case ack := <-p.future.Ok():
		return check(ack)
	case err := <-p.future.Err():
		return false, fmt.Errorf("publish: %w", err)
	case <-t.C:
		return false, errPublishTimeout
	case <-r.work.Done():
		return false, r.work.Err()
	}
}
