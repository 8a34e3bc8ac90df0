package jetstream

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/statepipe/statepipe"
)

// Sink publishes the result of each successful request to a subject
// before the [Source] acks its message. Every delivery of a message
// publishes with the same message ID (Nats-Msg-Id: the source stream's name
// and the message's sequence in it, as "STREAM:SEQ"), so the stream that
// captures Subject stores a redelivered message's result once, provided
// its Duplicates window is longer than the time between the first
// delivery and the last redelivery.
//
// The results of the requests that come out together are published
// together (asynchronously), and each message is acked once the stream
// has confirmed its own result. A result the stream does not confirm
// within the Source's PublishTimeout fails like a retryable stage error;
// one that Encode rejects fails permanently.
type Sink[T any] struct {
	// Subject receives the results; required. A stream must capture it.
	Subject string
	// Encode makes a result's body; required.
	Encode func(T) ([]byte, error)
}

// publication is one result's publish: its future, or why there is none.
type publication struct {
	future jetstream.PubAckFuture
	err    error
}

// publishAll starts the publishes of the successful results in chunk;
// the others get a nil entry.
func (sk *Sink[T]) publishAll(r *run[T], chunk []statepipe.Request[T]) []*publication {
	pubs := make([]*publication, len(chunk))
	for i, req := range chunk {
		d := deliveryOf(req.Ctx)
		if req.Err != nil || d == nil {
			continue
		}
		p := &publication{}
		pubs[i] = p
		body, err := sk.encode(req.Data)
		if err != nil {
			p.err = Permanent(fmt.Errorf("sink: encode: %w", err))
			continue
		}
		m := nats.NewMsg(sk.Subject)
		m.Data = body
		m.Header.Set(jetstream.MsgIDHeader, d.id())
		p.future, p.err = r.src.JetStream.PublishMsgAsync(m)
		if p.err != nil {
			p.err = fmt.Errorf("sink: publish: %w", p.err)
		}
	}
	return pubs
}

func (sk *Sink[T]) encode(v T) (b []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return sk.Encode(v)
}

// errPublishTimeout is the failure of a result the stream did not confirm
// in time.
var errPublishTimeout = errors.New("sink: no ack from the stream in time")

// wait waits until deadline for the stream's ack of the result, and
// returns whether the stream had it already, or the failure.
func (p *publication) wait(deadline <-chan time.Time) (duplicate bool, err error) {
	if p.err != nil {
		return false, p.err
	}
	select {
	case ack := <-p.future.Ok():
		return ack.Duplicate, nil
	case err := <-p.future.Err():
		return false, fmt.Errorf("sink: publish: %w", err)
	case <-deadline:
		return false, errPublishTimeout
	}
}
