// Package connect holds what statepipe's log connectors share: the errors
// that decide a message's fate, the headers of a dead letter, and the
// counts every Source reports. The connectors themselves live in their
// own modules (connect/jetstream on NATS JetStream, connect/kafka on
// Kafka), so that a program switches logs by changing its Source, not
// its machine or its error handling.
//
// # What happens to a message
//
// A connector decodes each message into a request, runs it through a
// [statepipe.Pipelines] group, and settles the message by how the
// request came out ([Judge]):
//
//   - without an error: acked (JetStream) or committed (Kafka), after the
//     Sink, if any, stored its result;
//   - with an error matching [ErrPermanent], or a [*DecodeError]: sent to
//     the dead-letter destination with [HeaderReason] and [HeaderKind],
//     then settled so that it is not delivered again;
//   - with any other error: delivered again later, by the log, until the
//     connector's delivery limit; the failure on the last delivery is
//     dead-lettered as [KindExhausted].
//
// The two retry layers combine. Errors a stage marks with
// [statepipe.Retry] are retried in the process, at that stage, under the
// Pipelines' [statepipe.WithRetry] policy, without the message leaving
// it; a request whose attempts ran out comes out with a
// [*statepipe.RetryError], which is not permanent, so the log then
// redelivers the message (perhaps to another process) and the whole
// machine runs again. Mark an error [Permanent] to skip both layers.
package connect

import (
	"errors"
	"fmt"

	"github.com/statepipe/statepipe"
)

// ErrPermanent marks a failure that no retry can fix: a request that
// comes out of the pipeline with an error matching it (errors.Is) is
// dead-lettered at once instead of being delivered again. Wrap an error
// with [Permanent] to mark it.
var ErrPermanent = errors.New("statepipe/connect: permanent failure")

// Permanent marks err as a permanent failure: set it as a request's Err
// (r.Err = connect.Permanent(err)) and the connector dead-letters the
// message instead of having it delivered again. The result unwraps to
// err and matches [ErrPermanent]. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

type permanentError struct{ err error }

func (e permanentError) Error() string        { return "permanent: " + e.err.Error() }
func (e permanentError) Unwrap() error        { return e.err }
func (e permanentError) Is(target error) bool { return target == ErrPermanent }

// DecodeError is the failure of a message whose body the Source's Decode
// rejected (or panicked on). It is permanent: the message is
// dead-lettered without entering the pipeline.
type DecodeError struct {
	Err error
}

func (e *DecodeError) Error() string { return "decode: " + e.Err.Error() }
func (e *DecodeError) Unwrap() error { return e.Err }

// Decode calls decode on body and turns an error, or a panic, into a
// [*DecodeError].
func Decode[T any](decode func([]byte) (T, error), body []byte) (v T, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &DecodeError{Err: fmt.Errorf("panic: %v", p)}
		}
	}()
	v, err = decode(body)
	if err != nil {
		return v, &DecodeError{Err: err}
	}
	return v, nil
}

// Verdict is what a connector does with a message once its request came
// out: see [Judge].
type Verdict int

const (
	Done       Verdict = iota // processed: ack or commit it
	Redeliver                 // failed for now: have the log deliver it again later
	DeadLetter                // failed for good: dead-letter it, then settle it
)

// Judge tells what to do with a message whose request came out with err,
// and for a dead letter the [HeaderKind] value to give it. The package
// doc says why.
func Judge(err error) (v Verdict, kind string) {
	var de *DecodeError
	switch {
	case err == nil:
		return Done, ""
	case errors.As(err, &de):
		return DeadLetter, KindDecode
	case errors.Is(err, ErrPermanent):
		return DeadLetter, KindPermanent
	default:
		return Redeliver, ""
	}
}

// Headers every connector's dead letters carry besides the original
// message's own. Each connector adds its own for where the message came
// from (stream and sequence, or topic, partition and offset).
const (
	HeaderReason    = "Statepipe-Reason"    // the error, as text
	HeaderKind      = "Statepipe-Kind"      // KindDecode, KindPermanent or KindExhausted
	HeaderDelivered = "Statepipe-Delivered" // deliveries so far, the failed one included
)

// Why a message was dead-lettered: the values of [HeaderKind].
const (
	KindDecode    = "decode"    // Decode failed
	KindPermanent = "permanent" // the request failed with an error matching ErrPermanent
	KindExhausted = "exhausted" // a failure on the last delivery the connector allows
)

// RetryExhausted reports whether err says the in-process retries of a
// stage ran out ([statepipe.RetryError]), for a connector's logs.
func RetryExhausted(err error) bool {
	var re *statepipe.RetryError
	return errors.As(err, &re)
}
