package statepipe

import (
	"math/bits"
	"time"
)

// Latency buckets are powers of two of nanoseconds, from 256ns (2^8) to
// about 68s (2^36), plus one for everything slower: fixed, so that adding
// an observation is an index and an increment, and so that exporters
// (Prometheus) get stable bucket bounds.
const (
	minBucketExp = 8
	maxBucketExp = 36
	numBuckets   = maxBucketExp - minBucketExp + 2
)

// BucketBounds returns the upper bounds of the latency histogram buckets,
// in increasing order; the last bucket has no upper bound.
func BucketBounds() []time.Duration {
	b := make([]time.Duration, numBuckets-1)
	for i := range b {
		b[i] = time.Duration(1) << (minBucketExp + i)
	}
	return b
}

// bucketOf returns the bucket of a duration in nanoseconds.
func bucketOf(ns int64) int {
	if ns <= 1<<minBucketExp {
		return 0
	}
	// The smallest e with ns <= 2^e.
	e := bits.Len64(uint64(ns - 1))
	return min(e-minBucketExp, numBuckets-1)
}

// Histogram counts durations in the fixed buckets of [BucketBounds].
type Histogram struct {
	Counts [numBuckets]uint64 // Counts[i]: durations up to BucketBounds()[i]; the last: the rest
	Count  uint64
	Sum    time.Duration
}

// Quantile estimates the q-quantile (0 < q <= 1), interpolating linearly
// inside the bucket it falls in; 0 if the histogram is empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.Count == 0 {
		return 0
	}
	rank := q * float64(h.Count)
	var seen float64
	for i, c := range h.Counts {
		if c == 0 {
			continue
		}
		if seen+float64(c) >= rank {
			lo, hi := bucketRange(i)
			return lo + time.Duration(float64(hi-lo)*(rank-seen)/float64(c))
		}
		seen += float64(c)
	}
	_, hi := bucketRange(numBuckets - 1)
	return hi
}

// Mean returns the average duration; 0 if the histogram is empty.
func (h *Histogram) Mean() time.Duration {
	if h.Count == 0 {
		return 0
	}
	return h.Sum / time.Duration(h.Count)
}

// bucketRange returns the bounds of bucket i; the last bucket is given a
// nominal upper bound of twice its lower one.
func bucketRange(i int) (lo, hi time.Duration) {
	if i > 0 {
		lo = time.Duration(1) << (minBucketExp + i - 1)
	}
	return lo, time.Duration(1) << (minBucketExp + i)
}

func (h *Histogram) add(o *Histogram) {
	for i, c := range o.Counts {
		h.Counts[i] += c
	}
	h.Count += o.Count
	h.Sum += o.Sum
}

func (h *Histogram) observe(ns int64) {
	h.Counts[bucketOf(ns)]++
	h.Count++
	h.Sum += time.Duration(ns)
}
