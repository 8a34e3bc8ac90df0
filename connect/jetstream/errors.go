package jetstream

import (
	"errors"
	"fmt"
	"time"

	"github.com/statepipe/statepipe"
)

var (
	// ErrPermanent marks a failure that no retry can fix: a request that
	// comes out of the pipeline with an error matching it (errors.Is) is
	// dead-lettered and termed at once instead of being redelivered.
	// Wrap an error with [Permanent] to mark it.
	ErrPermanent = errors.New("statepipe/jetstream: permanent failure")

	// ErrRunning is returned by [Source.Run] when the Source is already
	// running: a Source reads its consumer from one Run at a time.
	ErrRunning = errors.New("statepipe/jetstream: Source already running")
)

// Permanent marks err as a permanent failure: set it as a request's Err
// (r.Err = jetstream.Permanent(err)) and the Source dead-letters and terms
// the message instead of redelivering it. The result still unwraps to err
// and matches [ErrPermanent]. Permanent(nil) is nil.
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

// DecodeError is the failure of a message whose body [Source.Decode]
// rejected (or panicked on). It is permanent: the message is dead-lettered.
type DecodeError struct {
	Err error
}

func (e *DecodeError) Error() string { return "decode: " + e.Err.Error() }
func (e *DecodeError) Unwrap() error { return e.Err }

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
