package statepipe

import (
	"testing"
	"time"
)

func TestHistogramBuckets(t *testing.T) {
	bounds := BucketBounds()
	for i, b := range bounds {
		if got := bucketOf(int64(b)); got != i {
			t.Errorf("bucketOf(%v) = %d, want %d (upper bounds are inclusive)", b, got, i)
		}
		if got := bucketOf(int64(b) + 1); got != i+1 {
			t.Errorf("bucketOf(%v+1ns) = %d, want %d", b, got, i+1)
		}
	}
	if got := bucketOf(0); got != 0 {
		t.Errorf("bucketOf(0) = %d", got)
	}
	if got := bucketOf(int64(1000 * time.Hour)); got != numBuckets-1 {
		t.Errorf("a very slow run lands in bucket %d, want the last (%d)", got, numBuckets-1)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Mean() != 0 {
		t.Fatal("an empty histogram has no quantiles")
	}
	// 90 fast runs (~1µs) and 10 slow ones (~1ms).
	for range 90 {
		h.observe(int64(time.Microsecond))
	}
	for range 10 {
		h.observe(int64(time.Millisecond))
	}
	if p50 := h.Quantile(0.5); p50 < 512*time.Nanosecond || p50 > 1024*time.Nanosecond {
		t.Errorf("p50 %v, want within the 1µs bucket", p50)
	}
	if p99 := h.Quantile(0.99); p99 < 512*time.Microsecond || p99 > 1024*time.Microsecond {
		t.Errorf("p99 %v, want within the 1ms bucket", p99)
	}
	if h.Count != 100 || h.Mean() != (90*time.Microsecond+10*time.Millisecond)/100 {
		t.Errorf("count %d mean %v", h.Count, h.Mean())
	}
}

func TestStageLatencyInStats(t *testing.T) {
	p := runRoutes(t, WithObserver(ObserverFunc(func(Event) {})))
	s := p.Stats()
	for _, st := range s.Stages {
		if st.Runs > 0 && (st.Latency.Count != st.Runs || st.P99() <= 0) {
			t.Errorf("stage %s: %d runs, %d timed, p99 %v", st.Name, st.Runs, st.Latency.Count, st.P99())
		}
	}
	if len(s.Batchers) != 1 || s.Batchers[0].Name != "store" || s.Batchers[0].Items != 4 {
		t.Errorf("batchers %+v", s.Batchers)
	}
}

// The timed sample is one submission position in timingSample, spread
// evenly whatever the routing: every 10th position, say, is timed about as
// often as the rest.
func TestTimedSampleIsEven(t *testing.T) {
	const n = 80_000
	all, tenth := 0, 0
	for seq := range uint64(n) {
		if timed(seq) {
			all++
			if seq%10 == 0 {
				tenth++
			}
		}
	}
	want := n / timingSample
	if all < want*95/100 || all > want*105/100 {
		t.Errorf("%d of %d timed, want about %d", all, n, want)
	}
	if w := want / 10; tenth < w*80/100 || tenth > w*120/100 {
		t.Errorf("%d of every 10th position timed, want about %d", tenth, w)
	}
}
