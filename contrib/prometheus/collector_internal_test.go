package prometheus

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/statepipe/statepipe"
)

// TestRising feeds the collector snapshots in which Submitted and a
// rebuilt duration sum dip, as they can while work goes on, and checks
// that the exported counters hold their highest value.
func TestRising(t *testing.T) {
	steps := []struct {
		submitted uint64
		queue     statepipe.Durations
		want      string // submitted, queue count and sum as exported
	}{
		{100, statepipe.Durations{Count: 3, Avg: 3}, "100 3 9e-09"},
		// Avg 10/4 rounds down to 2: the rebuilt sum is 8ns.
		{90, statepipe.Durations{Count: 4, Avg: 2}, "100 4 9e-09"},
		{120, statepipe.Durations{Count: 5, Avg: 4}, "120 5 2e-08"},
	}
	var i int
	c := newCollector(func() statepipe.Stats {
		return statepipe.Stats{Submitted: steps[i].submitted, QueueTime: steps[i].queue}
	}, validate(nil))
	for i = range steps {
		f := strings.Fields(steps[i].want)
		want := `
# HELP statepipe_requests_submitted_total Requests accepted by Submit.
# TYPE statepipe_requests_submitted_total counter
statepipe_requests_submitted_total ` + f[0] + `
# HELP statepipe_queue_duration_seconds Time from Submit until a worker picks the request up, over sampled requests.
# TYPE statepipe_queue_duration_seconds summary
statepipe_queue_duration_seconds_sum ` + f[2] + `
statepipe_queue_duration_seconds_count ` + f[1] + `
`
		if err := testutil.CollectAndCompare(c, strings.NewReader(want),
			"statepipe_requests_submitted_total", "statepipe_queue_duration_seconds"); err != nil {
			t.Errorf("step %d: %v", i, err)
		}
	}
}

// TestMerge checks that stages and batchers that share a name are added
// up into one set of series, so that a scrape never fails on duplicates.
func TestMerge(t *testing.T) {
	var h1, h2 statepipe.Histogram
	h1.Counts[0], h1.Count, h1.Sum = 2, 2, 200
	h2.Counts[1], h2.Count, h2.Sum = 1, 1, 300
	stats := statepipe.Stats{
		Stages: []statepipe.StageStats{
			{Name: "Start", Runs: 5, Errors: 1, Latency: h1},
			{Name: "Start", Runs: 2, Errors: 0, Latency: h2},
		},
		Batchers: []statepipe.BatchStats{
			{Name: "batch", Items: 10, Parked: 1, FlushTime: statepipe.Durations{Count: 2, Avg: time.Millisecond}},
			{Name: "batch", Items: 5, Parked: 2, FlushTime: statepipe.Durations{Count: 1, Avg: 2 * time.Millisecond}},
			{Name: "other", Items: 7},
		},
	}
	stats.Batchers[0].Flushes[statepipe.FlushSize] = 1
	stats.Batchers[0].Flushes[statepipe.FlushIdle] = 1
	stats.Batchers[1].Flushes[statepipe.FlushSize] = 1
	c := newCollector(func() statepipe.Stats { return stats }, validate([]Option{WithNamespace("x")}))
	want := `
# HELP x_stage_runs_total Calls of the stage.
# TYPE x_stage_runs_total counter
x_stage_runs_total{stage="Start"} 7
# HELP x_stage_errors_total Calls of the stage that ended with the request's error set, panics included.
# TYPE x_stage_errors_total counter
x_stage_errors_total{stage="Start"} 1
# HELP x_batch_items_total Requests flushed by the batcher.
# TYPE x_batch_items_total counter
x_batch_items_total{batcher="batch"} 15
x_batch_items_total{batcher="other"} 7
# HELP x_batch_items_parked Requests parked in the batcher now.
# TYPE x_batch_items_parked gauge
x_batch_items_parked{batcher="batch"} 3
x_batch_items_parked{batcher="other"} 0
# HELP x_batch_flush_duration_seconds Duration of the batcher's flush calls.
# TYPE x_batch_flush_duration_seconds summary
x_batch_flush_duration_seconds_sum{batcher="batch"} 0.004
x_batch_flush_duration_seconds_count{batcher="batch"} 3
x_batch_flush_duration_seconds_sum{batcher="other"} 0
x_batch_flush_duration_seconds_count{batcher="other"} 0
`
	names := []string{"x_stage_runs_total", "x_stage_errors_total", "x_batch_items_total", "x_batch_items_parked", "x_batch_flush_duration_seconds"}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	// The histogram of the merged stage: 2 runs up to 256ns, 1 up to 512ns.
	out, err := testutil.CollectAndFormat(c, expfmt.TypeTextPlain, "x_stage_duration_seconds")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		`x_stage_duration_seconds_bucket{stage="Start",le="2.56e-07"} 2`,
		`x_stage_duration_seconds_bucket{stage="Start",le="5.12e-07"} 3`,
		`x_stage_duration_seconds_bucket{stage="Start",le="68.719476736"} 3`,
		`x_stage_duration_seconds_bucket{stage="Start",le="+Inf"} 3`,
		`x_stage_duration_seconds_sum{stage="Start"} 5e-07`,
		`x_stage_duration_seconds_count{stage="Start"} 3`,
	} {
		if !strings.Contains(string(out), line+"\n") {
			t.Errorf("no line %q in\n%s", line, out)
		}
	}
	if n := testutil.CollectAndCount(c, "x_batch_flushes_total"); n != 2*5 {
		t.Errorf("%d flush series, want one per batcher name and reason: 10", n)
	}
}
