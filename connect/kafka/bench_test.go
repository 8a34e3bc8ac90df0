package kafka_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkWorkers measures records per second through 1, 2 and 3 worker
// processes in one consumer group on an in-process kfake cluster (in the
// benchmark's own process, on this machine), against the same number of
// plain franz-go consumer loops doing the same work (runPlain): decode,
// the work, the result produced and acknowledged, the offsets committed.
// The clock runs from when the group is stable and the first record is
// produced until the group has committed the last one.
//
// Workloads: light (no work: the cost of the transport and the
// bookkeeping), cpu (about 0.1ms of CPU work per record in a stage) and
// bulk (a bulk call of 100 records that waits 20ms, like a remote
// service that does not use this machine's CPU); bulk4 is bulk with the
// Batcher's MaxFlushes(4), four bulk calls at once, which the plain loop
// as written does not do (it runs one at a time, as bulk).
//
//	go test -run '^$' -bench Workers -benchtime 1x ./connect/kafka/
func BenchmarkWorkers(b *testing.B) {
	workloads := []struct {
		name string
		n    int
		spec workerSpec
	}{
		{"light", 20_000, workerSpec{MaxInFlight: 512, MaxItems: 100}},
		{"cpu", 10_000, workerSpec{MaxInFlight: 256, MaxItems: 100, Work: 50}},
		{"bulk", 10_000, workerSpec{MaxInFlight: 512, MaxItems: 100, FlushSleep: 20 * time.Millisecond}},
		{"bulk4", 10_000, workerSpec{MaxInFlight: 512, MaxItems: 100, FlushSleep: 20 * time.Millisecond, MaxFlushes: 4}},
	}
	for _, wl := range workloads {
		for _, plain := range []bool{true, false} {
			for procs := 1; procs <= 3; procs++ {
				kind := "source"
				if plain {
					kind = "plain"
					if wl.spec.MaxFlushes > 1 {
						continue // the same loop as bulk's
					}
				}
				b.Run(fmt.Sprintf("%s/%s/procs=%d", wl.name, kind, procs), func(b *testing.B) {
					spec := wl.spec
					spec.Plain = plain
					var total time.Duration
					for range b.N {
						total += runWorkers(b, procs, wl.n, spec)
					}
					b.ReportMetric(float64(wl.n*b.N)/total.Seconds(), "records/s")
					b.ReportMetric(float64(total.Nanoseconds())/float64(wl.n*b.N), "ns/record")
					b.ReportMetric(0, "ns/op")
				})
			}
		}
	}
}

// runWorkers runs n records through procs worker processes on a new
// cluster and returns the time from the first record produced to the
// last committed.
func runWorkers(b *testing.B, procs, n int, spec workerSpec) time.Duration {
	b.StopTimer()
	defer b.StartTimer()
	addrs, adm := newCluster(b, 6)
	spec.Addrs = addrs
	ws := startWorkers(b, adm, procs, spec)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic(jobsTopic),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	start := time.Now()
	for _, id := range ids("bench", n) {
		cl.Produce(context.Background(), &kgo.Record{Value: []byte(id)}, func(_ *kgo.Record, err error) {
			if err != nil {
				b.Error(err)
			}
		})
	}
	if err := cl.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	for {
		if l := lag(b, adm); l == 0 {
			break
		}
		if time.Since(start) > 5*time.Minute {
			b.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	for _, w := range ws {
		stopWorker(b, w)
	}
	return elapsed
}
