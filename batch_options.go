package statepipe

import (
	"fmt"
	"strings"
	"time"
)

// A BatchOption configures [NewBatcher].
type BatchOption interface {
	applyBatch(*batchConfig)
}

type batchOptionFunc func(*batchConfig)

func (f batchOptionFunc) applyBatch(c *batchConfig) { f(c) }

type batchConfig struct {
	maxItems   int
	maxWait    time.Duration
	maxFlushes int
	maxBytes   int
	size       any // func(T) int, checked against T by NewBatcher
	key        any // func() batchIndex[T], checked likewise
	name       string
	noIdle     bool
	timeout    time.Duration
	problems   []string
}

// MaxItems flushes a batch as soon as it holds n requests. The default is
// 100; n must be at least 1.
func MaxItems(n int) BatchOption {
	return batchOptionFunc(func(c *batchConfig) {
		if n < 1 {
			c.problems = append(c.problems, "MaxItems: n must be at least 1")
		}
		c.maxItems = n
	})
}

// MaxWait is how long a batch lingers after its first request, waiting for
// more, before it is due. A batch is due sooner when nothing is left
// running that could join it, and flushes sooner when it is full. A due
// batch flushes as soon as a flush slot is free, taking requests until
// then. The default is 10ms; d must not be negative.
//
// MaxWait(0) adds no wait of its own: a batch is due at once, and flushes
// as soon as a slot is free, while what arrives meanwhile gathers into the
// next batch (group commit): batches grow exactly as long as the bulk
// calls are busy. Choose a longer MaxWait only to make fuller batches from
// input that trickles in (it is then the latency that each request may
// pay), with NoIdleFlush if the engine is often idle between arrivals.
func MaxWait(d time.Duration) BatchOption {
	return batchOptionFunc(func(c *batchConfig) {
		if d < 0 {
			c.problems = append(c.problems, "MaxWait: d must not be negative")
		}
		c.maxWait = d
	})
}

// MaxFlushes is how many flushes of one batcher may run at once: the
// bulk calls in flight. Due and full batches wait for a free slot, and
// their requests stay in flight, so a slow bulk service pushes back on
// Submit. Under request/response load, up to n small batches flush at once
// rather than one after another. Set it to what the bulk service serves
// well in parallel; the Pipelines need room for MaxItems x MaxFlushes
// parked requests (see [WithMaxInFlight]). The default is 1; n must be at
// least 1.
func MaxFlushes(n int) BatchOption {
	return batchOptionFunc(func(c *batchConfig) {
		if n < 1 {
			c.problems = append(c.problems, "MaxFlushes: n must be at least 1")
		}
		c.maxFlushes = n
	})
}

// MaxBytes flushes a batch as soon as the sizes of its requests' data, as
// measured by size, add up to n or more. A single request larger than n
// is flushed alone. Off by default; n must be at least 1 and T must be
// the batcher's data type.
func MaxBytes[T any](n int, size func(T) int) BatchOption {
	return batchOptionFunc(func(c *batchConfig) {
		if n < 1 || size == nil {
			c.problems = append(c.problems, "MaxBytes: n must be at least 1 and size not nil")
		}
		c.maxBytes, c.size = n, size
	})
}

// BatchKey keeps one batch per key (table, tenant, endpoint): requests
// with different keys never share a flush, and each key's batch has its
// own size and linger. T must be the batcher's data type. key runs under
// the batcher's lock: it must be quick and must not call the batcher.
func BatchKey[T any, K comparable](key func(T) K) BatchOption {
	return batchOptionFunc(func(c *batchConfig) {
		if key == nil {
			c.problems = append(c.problems, "BatchKey: nil key function")
			return
		}
		c.key = func() batchIndex[T] { return &keyedIndex[T, K]{key: key, m: map[K]*batch[T]{}} }
	})
}

// FlushTimeout gives each flush call a context that ends after d, so that
// a bulk call that hangs cannot hold its requests, or Pipelines.Close,
// for ever: flush should return when the context ends (with its error,
// which then fails the batch). Off by default: the context never ends.
// d must be positive.
func FlushTimeout(d time.Duration) BatchOption {
	return batchOptionFunc(func(c *batchConfig) {
		if d <= 0 {
			c.problems = append(c.problems, "FlushTimeout: d must be positive")
		}
		c.timeout = d
	})
}

// NoIdleFlush keeps batches from flushing because the engine went idle:
// they flush on MaxItems, MaxBytes, MaxWait or Close only. Use it when
// input trickles in (from a network, say): the workers are idle between
// arrivals, and idle flushes would send batches of one or two. A lone
// request then waits MaxWait. Off by default.
func NoIdleFlush() BatchOption {
	return batchOptionFunc(func(c *batchConfig) { c.noIdle = true })
}

// BatchName names the batcher in statistics and errors. The default is
// "batch".
func BatchName(name string) BatchOption {
	return batchOptionFunc(func(c *batchConfig) { c.name = name })
}

// validateBatch applies opts to the defaults. It always returns a usable
// configuration and index; err, wrapping ErrInvalidOption, names every
// problem found.
func validateBatch[T any](opts []BatchOption) (batchConfig, func(T) int, func() batchIndex[T], error) {
	c := batchConfig{maxItems: 100, maxWait: 10 * time.Millisecond, maxFlushes: 1, name: "batch"}
	for _, o := range opts {
		if o == nil {
			c.problems = append(c.problems, "nil BatchOption")
			continue
		}
		o.applyBatch(&c)
	}
	var size func(T) int
	if c.size != nil {
		var ok bool
		if size, ok = c.size.(func(T) int); !ok {
			c.problems = append(c.problems, fmt.Sprintf("MaxBytes: size function is %T, want func(%T) int", c.size, *new(T)))
		}
	}
	index := func() batchIndex[T] { return &singleIndex[T]{} }
	if c.key != nil {
		if keyed, ok := c.key.(func() batchIndex[T]); ok {
			index = keyed
		} else {
			c.problems = append(c.problems, fmt.Sprintf("BatchKey: key function is not for the batcher's data type %T", *new(T)))
		}
	}
	if len(c.problems) > 0 {
		// A usable configuration all the same: Add fails with err.
		c.maxItems, c.maxFlushes = max(c.maxItems, 1), max(c.maxFlushes, 1)
		c.maxWait = max(c.maxWait, 0)
		return c, nil, index, invalid("NewBatcher %q: %s", c.name, strings.Join(c.problems, "; "))
	}
	return c, size, index, nil
}

// boundTooSmall says why an in-flight bound n caps a batcher: parked
// requests count as in flight, so its MaxFlushes batches of MaxItems could
// never all be full at once.
func boundTooSmall(c batchConfig, n int) string {
	return fmt.Sprintf("WithMaxInFlight(%d) is less than batcher %q's MaxItems(%d) x MaxFlushes(%d) = %d: its flushes can never all be full at once",
		n, c.name, c.maxItems, c.maxFlushes, c.maxItems*c.maxFlushes)
}
