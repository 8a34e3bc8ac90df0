package jetstream_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkWorkers measures messages per second through 1, 2 and 3
// worker processes sharing one consumer on an embedded server on this
// machine: fetch, decode, the machine, the Sink's publish (stored and
// confirmed by the RESULTS stream) and the ack, for every message. The
// messages are in the stream before the workers start; the clock runs
// from the start signal until the last result is stored.
//
// Workloads: light (the machine does nothing: the cost of the transport
// and the Source), cpu (about 0.18ms of CPU work per message in a stage) and
// bulk (a Batcher of 100 whose flush waits 20ms, like a remote bulk call
// that does not use this machine's CPU). light and cpu also run with
// plain=1, a hand-written nats.go consumer doing the same work per
// message without statepipe (runPlain), as the baseline. cpu-ns/msg is
// the worker processes' user and system CPU per message. partitioned is
// light on 8 partitions with per-key order (64 keys, WithKey), the
// processes sharing the partitions; with kill, one of 3 processes is
// SIGKILLed when half of the results are in, and its partitions pass
// to the others (the members' TTL is 1.5s, PinnedTTL 2.5s).
//
//	go test -run '^$' -bench Workers -benchtime 1x ./connect/jetstream/
func BenchmarkWorkers(b *testing.B) {
	workloads := []struct {
		name string
		msgs int
		spec workerSpec
		kill bool
	}{
		{"light", 20_000, workerSpec{MaxInFlight: 512, MaxItems: 100}, false},
		{"light/plain=1", 20_000, workerSpec{Plain: true}, false},
		{"cpu", 10_000, workerSpec{MaxInFlight: 256, MaxItems: 100, Work: 75}, false},
		{"cpu/plain=1", 10_000, workerSpec{Plain: true, Work: 75}, false},
		{"bulk", 10_000, workerSpec{MaxInFlight: 512, MaxItems: 100, FlushSleep: 20 * time.Millisecond}, false},
		{"partitioned", 60_000, workerSpec{MaxInFlight: 512, MaxItems: 100, Partitions: 8}, false},
		{"partitioned/kill", 60_000, workerSpec{MaxInFlight: 512, MaxItems: 100, Partitions: 8}, true},
	}
	for _, wl := range workloads {
		for procs := 1; procs <= 3; procs++ {
			if wl.kill && procs < 3 {
				continue
			}
			b.Run(fmt.Sprintf("%s/procs=%d", wl.name, procs), func(b *testing.B) {
				var total, cpu time.Duration
				for i := 0; i < b.N; i++ {
					el, c := runWorkers(b, procs, wl.msgs, wl.spec, wl.kill)
					total, cpu = total+el, cpu+c
				}
				rate := float64(wl.msgs*b.N) / total.Seconds()
				b.ReportMetric(rate, "msgs/s")
				b.ReportMetric(float64(total.Nanoseconds())/float64(wl.msgs*b.N), "ns/msg")
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(wl.msgs*b.N), "cpu-ns/msg")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// partitioned makes the partitioned stream PARTS with count partitions
// and the members' bucket, and publishes n messages of 64 keys to it; it
// returns what waits until every partition's consumer is settled.
func (e *env) partitioned(b *testing.B, count, n int) (settled func()) {
	ctx := context.Background()
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: partsStream, Subjects: []string{"parts.*"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
	if _, err := e.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: membersBucket, TTL: 1500 * time.Millisecond}); err != nil {
		b.Fatal(err)
	}
	for i := range n {
		key := fmt.Sprintf("k%02d", i%64)
		h := fnv.New32a()
		h.Write([]byte(key))
		if _, err := e.js.PublishAsync(fmt.Sprintf("parts.%d", h.Sum32()%uint32(count)), fmt.Appendf(nil, "%s/%d", key, i/64)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-e.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publishing timed out")
	}
	return func() {
		waitFor(b, 30*time.Second, "the partitions settled", func() bool { return streamMsgs(b, e.js, partsStream) == 0 })
	}
}

// partitionState describes the partitions' consumers and the members,
// for a benchmark that timed out.
func (e *env) partitionState(count int) string {
	ctx := context.Background()
	var out []string
	for i := range count {
		c, err := e.js.Consumer(ctx, partsStream, fmt.Sprintf("ordered-%d", i))
		if err != nil {
			out = append(out, fmt.Sprintf("partition %d: %v", i, err))
			continue
		}
		info, err := c.Info(ctx)
		if err != nil {
			out = append(out, fmt.Sprintf("partition %d: %v", i, err))
			continue
		}
		out = append(out, fmt.Sprintf("partition %d: pending %d, ack pending %d, redelivered %d, waiting %d, ack floor %d, delivered %d, pins %+v",
			i, info.NumPending, info.NumAckPending, info.NumRedelivered, info.NumWaiting, info.AckFloor.Stream, info.Delivered.Stream, info.PriorityGroups))
	}
	if kv, err := e.js.KeyValue(ctx, membersBucket); err == nil {
		keys, err := kv.Keys(ctx)
		out = append(out, fmt.Sprintf("members: %v %v", keys, err))
	}
	return strings.Join(out, "\n")
}

// runWorkers runs n messages through procs worker processes on a new
// server and returns the time from the start signal to the last result,
// and the CPU the workers used.
func runWorkers(b *testing.B, procs, n int, spec workerSpec, kill bool) (elapsed, cpu time.Duration) {
	b.StopTimer()
	defer b.StartTimer()
	e := newEnv(b)
	var settled func()
	if spec.Partitions > 0 {
		settled = e.partitioned(b, spec.Partitions, n)
	} else {
		cfg := consumerConfig()
		cfg.AckWait = 30 * time.Second
		cfg.MaxAckPending = 100_000
		cons := e.consumer(b, cfg)
		publish(b, e.js, ids(fmt.Sprintf("bench%d", procs), n)...)
		settled = func() { settledAll(b, e, cons) }
	}
	spec.URL, spec.Gate = e.url, "go"
	ws := startWorkers(b, procs, spec)

	start := time.Now()
	if err := e.nc.Publish("go", nil); err != nil {
		b.Fatal(err)
	}
	killed := !kill
	for streamMsgs(b, e.js, resultsStream) < uint64(n) {
		time.Sleep(5 * time.Millisecond)
		if time.Since(start) > 2*time.Minute {
			state := e.partitionState(spec.Partitions)
			for i, w := range ws {
				if !kill || i > 0 {
					b.Logf("worker %d at the timeout: %+v", i, w.stop(b))
				}
			}
			b.Fatalf("timed out with %d results of %d\n%s", streamMsgs(b, e.js, resultsStream), n, state)
		}
		if !killed && streamMsgs(b, e.js, resultsStream) >= uint64(n/2) {
			ws[0].kill(b)
			killed = true
			b.Logf("killed a worker after %v", time.Since(start))
		}
	}
	elapsed = time.Since(start)
	var acked uint64
	if kill {
		ws = ws[1:]
	}
	for _, w := range ws {
		s := w.stop(b)
		cpu += w.cpu
		acked += s.Done
		b.Logf("%d workers: %+v", procs, s)
	}
	settled()
	if !kill && acked != uint64(n) {
		b.Fatalf("%d acked, want %d", acked, n)
	}
	return elapsed, cpu
}
