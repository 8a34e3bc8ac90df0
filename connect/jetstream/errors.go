package jetstream

import (
	"errors"
	"fmt"
	"time"

	"github.com/statepipe/statepipe"
	"github.com/statepipe/statepipe/connect"
)

// The errors that decide a message's fate are the connect package's, so
// that a machine runs on JetStream or Kafka with the same error handling.
// These names are kept for the programs written before it.
var (
	// ErrPermanent is [connect.ErrPermanent].
	ErrPermanent = connect.ErrPermanent

	// ErrRunning is returned by [Source.Run] when the Source is already
	// running: a Source reads its consumer from one Run at a time.
	ErrRunning = errors.New("statepipe/jetstream: Source already running")
)

// Permanent is [connect.Permanent]: r.Err = jetstream.Permanent(err)
// dead-letters the message instead of having it delivered again.
func Permanent(err error) error { return connect.Permanent(err) }

// DecodeError is [connect.DecodeError]: the failure of a message whose
// body [Source.Decode] rejected (or panicked on).
type DecodeError = connect.DecodeError

// Exponential returns a backoff that waits base before the second
// delivery, twice as long before each one after, and at most max:
// base*2^(delivered-1), capped. It is the default [Source.Backoff] with
// base 1s and max 1min.
func Exponential(base, max time.Duration) func(delivered uint64) time.Duration {
	return func(delivered uint64) time.Duration {
		d := base
		for i := uint64(1); i < delivered && d < max; i++ {
			d *= 2
		}
		return min(d, max)
	}
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: jetstream.Source: %s", statepipe.ErrInvalidOption, fmt.Sprintf(format, args...))
}
