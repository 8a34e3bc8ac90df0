package statepipe

import (
	"fmt"
	"time"
)

// Retry marks err as worth retrying: a stage that sets
// r.Err = statepipe.Retry(err) runs again, at the same stage, after a
// backoff under the Pipelines' policy ([WithRetry]). The result unwraps
// to err. Retry(nil) is nil.
func Retry(err error) error {
	if err == nil {
		return nil
	}
	return &retryMark{err: err}
}

// RetryAfter is [Retry] with a wait of at least d before the next attempt,
// for a service that says when to come back (an HTTP 429's Retry-After).
// The policy's backoff still applies if it is longer. RetryAfter(nil, d)
// is nil.
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &retryMark{err: err, after: max(d, 0)}
}

// retryMark is the error Retry and RetryAfter return.
type retryMark struct {
	err   error
	after time.Duration
}

func (e *retryMark) Error() string { return e.err.Error() }
func (e *retryMark) Unwrap() error { return e.err }

// retryable reports whether err is marked for retry, and the least wait
// it asks for. The first mark in err's chain counts. It walks the chain
// itself rather than with errors.As, which would allocate on every failed
// request.
func retryable(err error) (after time.Duration, ok bool) {
	for err != nil {
		switch e := err.(type) {
		case *retryMark:
			return e.after, true
		case interface{ Unwrap() error }:
			err = e.Unwrap()
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				if after, ok := retryable(inner); ok {
					return after, true
				}
			}
			return 0, false
		default:
			return 0, false
		}
	}
	return 0, false
}

// RetryError is the error of a request whose stage kept failing with an
// error marked by [Retry] until its attempts ran out. Unwrap returns the
// last attempt's error without the mark, so errors.Is reaches the
// original error.
type RetryError struct {
	Stage    string // the stage that failed (or the batcher's name, for a flush)
	Attempts int    // attempts made, the first included
	Err      error  // the last attempt's error
}

func (e *RetryError) Error() string {
	return fmt.Sprintf("statepipe: stage %s failed %d times: %v", e.Stage, e.Attempts, e.Err)
}

func (e *RetryError) Unwrap() error { return e.Err }
