package prometheus_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/statepipe/statepipe/connect"
	spprom "github.com/statepipe/statepipe/contrib/prometheus"
)

// fakeSource reports fixed counts, as a connector's Source would.
type fakeSource struct{ s connect.SourceStats }

func (f *fakeSource) SourceStats() connect.SourceStats { return f.s }

func TestSourceCollectorExportsTheCountsAndLagPerPartition(t *testing.T) {
	src := &fakeSource{connect.SourceStats{
		Fetched: 10, Redelivered: 2, Done: 7, Retried: 1, DeadLettered: 2, DecodeFailed: 1,
		Released: 3, Published: 7, Duplicates: 1, Held: 4, HeldBytes: 400, Lag: 12,
		Partitions: []connect.PartitionStats{{Name: "orders/0", Lag: 5, Held: 1}, {Name: "orders/1", Lag: -1, Held: 3}},
	}}
	reg := prometheus.NewRegistry()
	reg.MustRegister(spprom.NewSourceCollector(src, spprom.WithConstLabels(prometheus.Labels{"source": "orders"})))
	want := `
# HELP statepipe_source_done_total Messages settled as processed: acked or committed.
# TYPE statepipe_source_done_total counter
statepipe_source_done_total{source="orders"} 7
# HELP statepipe_source_dead_lettered_total Messages that failed for good and were dead-lettered.
# TYPE statepipe_source_dead_lettered_total counter
statepipe_source_dead_lettered_total{source="orders"} 2
# HELP statepipe_source_lag Messages in the log that this Source's consumer has not yet processed.
# TYPE statepipe_source_lag gauge
statepipe_source_lag{source="orders"} 12
# HELP statepipe_source_partition_lag Messages of the partition after the last one settled.
# TYPE statepipe_source_partition_lag gauge
statepipe_source_partition_lag{partition="orders/0",source="orders"} 5
# HELP statepipe_source_partition_held Messages of the partition held now.
# TYPE statepipe_source_partition_held gauge
statepipe_source_partition_held{partition="orders/0",source="orders"} 1
statepipe_source_partition_held{partition="orders/1",source="orders"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"statepipe_source_done_total", "statepipe_source_dead_lettered_total", "statepipe_source_lag",
		"statepipe_source_partition_lag", "statepipe_source_partition_held"); err != nil {
		t.Error(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	// Unknown lag (-1) is left out rather than exported as a value.
	src.s.Lag = -1
	if n := testutil.CollectAndCount(spprom.NewSourceCollector(src), "statepipe_source_lag"); n != 0 {
		t.Errorf("%d lag series while the lag is unknown, want none", n)
	}
}

func TestSourceCollectorRejectsBadOptions(t *testing.T) {
	for name, c := range map[string]prometheus.Collector{
		"nil source":      spprom.NewSourceCollector(nil),
		"partition label": spprom.NewSourceCollector(&fakeSource{}, spprom.WithConstLabels(prometheus.Labels{"partition": "x"})),
	} {
		if err := prometheus.NewRegistry().Register(c); err == nil {
			t.Errorf("%s: Register accepted it", name)
		}
	}
}
