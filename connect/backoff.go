package connect

import "time"

// Exponential returns a backoff that waits base after the first failed
// delivery, twice as long after each one after it, and at most max:
// base*2^(delivered-1), capped. A connector asks it for the wait before
// delivering a message again after its delivered-th delivery failed.
func Exponential(base, max time.Duration) func(delivered int) time.Duration {
	return func(delivered int) time.Duration {
		d := base
		for i := 1; i < delivered && d < max; i++ {
			d *= 2
		}
		return min(d, max)
	}
}
