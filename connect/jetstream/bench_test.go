package jetstream_test

import (
	"fmt"
	"testing"
	"time"
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
// the worker processes' user and system CPU per message.
//
//	go test -run '^$' -bench Workers -benchtime 1x ./connect/jetstream/
func BenchmarkWorkers(b *testing.B) {
	workloads := []struct {
		name string
		msgs int
		spec workerSpec
	}{
		{"light", 20_000, workerSpec{MaxInFlight: 512, MaxItems: 100}},
		{"light/plain=1", 20_000, workerSpec{Plain: true}},
		{"cpu", 10_000, workerSpec{MaxInFlight: 256, MaxItems: 100, Work: 75}},
		{"cpu/plain=1", 10_000, workerSpec{Plain: true, Work: 75}},
		{"bulk", 10_000, workerSpec{MaxInFlight: 512, MaxItems: 100, FlushSleep: 20 * time.Millisecond}},
	}
	for _, wl := range workloads {
		for procs := 1; procs <= 3; procs++ {
			b.Run(fmt.Sprintf("%s/procs=%d", wl.name, procs), func(b *testing.B) {
				var total, cpu time.Duration
				for i := 0; i < b.N; i++ {
					el, c := runWorkers(b, procs, wl.msgs, wl.spec)
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

// runWorkers runs n messages through procs worker processes on a new
// server and returns the time from the start signal to the last result,
// and the CPU the workers used.
func runWorkers(b *testing.B, procs, n int, spec workerSpec) (elapsed, cpu time.Duration) {
	b.StopTimer()
	defer b.StartTimer()
	e := newEnv(b)
	cfg := consumerConfig()
	cfg.AckWait = 30 * time.Second
	cfg.MaxAckPending = 100_000
	cons := e.consumer(b, cfg)
	publish(b, e.js, ids(fmt.Sprintf("bench%d", procs), n)...)
	spec.URL, spec.Gate = e.url, "go"
	ws := startWorkers(b, procs, spec)

	start := time.Now()
	if err := e.nc.Publish("go", nil); err != nil {
		b.Fatal(err)
	}
	for streamMsgs(b, e.js, resultsStream) < uint64(n) {
		time.Sleep(5 * time.Millisecond)
		if time.Since(start) > 5*time.Minute {
			b.Fatal("timed out")
		}
	}
	elapsed = time.Since(start)
	var acked uint64
	for _, w := range ws {
		s := w.stop(b)
		cpu += w.cpu
		acked += s.Done
		b.Logf("%d workers: %+v", procs, s)
	}
	settledAll(b, e, cons)
	if acked != uint64(n) {
		b.Fatalf("%d acked, want %d", acked, n)
	}
	return elapsed, cpu
}
