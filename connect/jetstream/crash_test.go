package jetstream_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	spjs "github.com/statepipe/statepipe/connect/jetstream"
	"github.com/statepipe/statepipe/connect/jetstream/embedded"
)

// Three worker processes share one consumer; one is killed with SIGKILL
// mid-run. Every message still ends up in the results, once.
func TestCrashedWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	e := newEnv(t)
	cfg := consumerConfig()
	cfg.AckWait = 2 * time.Second // how soon the dead worker's messages come back
	cfg.MaxDeliver = 10
	cons := e.consumer(t, cfg)
	const n = 3000
	jobs := ids("crash", n)
	publish(t, e.js, jobs...)

	ws := startWorkers(t, 3, workerSpec{URL: e.url, MaxInFlight: 64, MaxItems: 16, FlushSleep: 10 * time.Millisecond, Gate: "go"})
	start := time.Now()
	if err := e.nc.Publish("go", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "a quarter of the results", func() bool { return streamMsgs(t, e.js, resultsStream) >= n/4 })
	ws[0].kill(t)
	killedAt := streamMsgs(t, e.js, resultsStream)
	held := pendingAcks(t, cons)
	t.Logf("killed worker 0 after %v, with %d results in and %d messages unacked across workers", time.Since(start).Round(time.Millisecond), killedAt, held)

	waitFor(t, 60*time.Second, "every result", func() bool { return streamMsgs(t, e.js, resultsStream) >= n })
	settledAll(t, e, cons)
	elapsed := time.Since(start)
	var total spjs.Stats
	for i, w := range ws[1:] {
		s := w.stop(t)
		t.Logf("worker %d: %+v", i+1, s)
		total.Fetched += s.Fetched
		total.Done += s.Done
		total.Redelivered += s.Redelivered
		total.Published += s.Published
		total.Duplicates += s.Duplicates
	}
	wantResults(t, e, jobs)
	byKilled := n - (total.Published - total.Duplicates)
	t.Logf("crash test: %d messages, all %d in the results once, in %v; the killed worker stored %d results; "+
		"the survivors took %d redeliveries, of which %d had a stored result already (de-duplicated)",
		n, n, elapsed.Round(time.Millisecond), byKilled, total.Redelivered, total.Duplicates)
	if total.Redelivered == 0 {
		t.Error("no redelivery: the killed worker held nothing?")
	}
	if total.Redelivered > uint64(64) {
		t.Errorf("%d redeliveries; the killed worker held at most MaxInFlight = 64", total.Redelivered)
	}
}

func pendingAcks(t testing.TB, c jetstream.Consumer) int {
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.NumAckPending
}

// The server stops mid-run and starts again on the same store: nothing is
// lost, and the Source carries on by itself once its connection is back.
func TestServerRestart(t *testing.T) {
	dir := t.TempDir()
	url, shutdown, err := embedded.Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { shutdown() }()
	port, err := embedded.PortOf(url)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{url: url}
	e.nc, e.js = connect(t, url)
	createStreams(t, e.js)
	cfg := consumerConfig()
	cfg.AckWait = 2 * time.Second
	cons := e.consumer(t, cfg)
	const n = 2000
	jobs := ids("restart", n)
	publish(t, e.js, jobs...)

	m := newMachine(20, 5*time.Millisecond)
	p := newPipelines(t, m)
	src := &spjs.Source[Job]{Consumer: cons, JetStream: e.js, Decode: decodeJob, MaxInFlight: 64,
		FetchWait: 200 * time.Millisecond, PublishTimeout: time.Second,
		Backoff: func(uint64) time.Duration { return 50 * time.Millisecond },
		Sink:    &spjs.Sink[Job]{Subject: resultsSubj, Encode: encodeJob}}
	stop := runSource(t, src, p)
	waitFor(t, 30*time.Second, "a third acked", func() bool { return src.Stats().Done >= n/3 })
	shutdown()
	t.Logf("server stopped with %+v", src.Stats())
	time.Sleep(300 * time.Millisecond)
	url2, shutdown2, err := embedded.Start(dir, embedded.Port(port))
	if err != nil {
		t.Fatal(err)
	}
	shutdown = shutdown2
	if url2 != url {
		t.Fatalf("restarted at %s, want %s", url2, url)
	}
	waitFor(t, 60*time.Second, "every result", func() bool {
		s, err := e.js.Stream(context.Background(), resultsStream)
		return err == nil && s.CachedInfo().State.Msgs >= n
	})
	settledAll(t, e, cons)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	s := src.Stats()
	t.Logf("after the restart: %+v", s)
	wantResults(t, e, jobs)
}
