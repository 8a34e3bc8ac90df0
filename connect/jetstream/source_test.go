package jetstream_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/statepipe/statepipe"
	spjs "github.com/statepipe/statepipe/connect/jetstream"
)

// newPipelines starts Pipelines for m, closed at the end of the test.
func newPipelines(t testing.TB, m *machine, opts ...statepipe.Option) *statepipe.Pipelines[Job] {
	t.Helper()
	p, err := statepipe.New[Job](m, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// resultIDs returns the bodies in the results stream, and how many times
// the most frequent one is there.
func resultIDs(t testing.TB, e *env) (map[string]int, int) {
	t.Helper()
	got := map[string]int{}
	most := 0
	for _, m := range readStream(t, e.js, resultsStream) {
		got[string(m.Data())]++
		most = max(most, got[string(m.Data())])
	}
	return got, most
}

func wantResults(t testing.TB, e *env, want []string) {
	t.Helper()
	got, most := resultIDs(t, e)
	if len(got) != len(want) || most != 1 {
		t.Fatalf("results: %d distinct (want %d), most copies of one %d (want 1)", len(got), len(want), most)
	}
	for _, id := range want {
		if got[id] != 1 {
			t.Fatalf("result %s: %d copies", id, got[id])
		}
	}
}

func TestProcessesEveryMessage(t *testing.T) {
	e := newEnv(t)
	cons := e.consumer(t, consumerConfig())
	jobs := ids("job", 500)
	publish(t, e.js, jobs...)

	m := newMachine(50, time.Millisecond)
	p := newPipelines(t, m)
	src := &spjs.Source[Job]{
		Consumer: cons, JetStream: e.js, Decode: decodeJob, MaxInFlight: 64,
		Sink: &spjs.Sink[Job]{Subject: resultsSubj, Encode: encodeJob},
	}
	stop := runSource(t, src, p)
	waitFor(t, 20*time.Second, "every job acked", func() bool { return src.Stats().Done == uint64(len(jobs)) })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	settledAll(t, e, cons)
	wantResults(t, e, jobs)

	s := src.Stats()
	if s.Fetched != 500 || s.Done != 500 || s.Published != 500 || s.Redelivered != 0 || s.Retried != 0 ||
		s.DeadLettered != 0 || s.Duplicates != 0 || s.Held != 0 {
		t.Errorf("stats: %+v", s)
	}
	p.Close()
	checkNoLeaks(t)
}

func TestRetryThenSucceed(t *testing.T) {
	e := newEnv(t)
	cons := e.consumer(t, consumerConfig())
	jobs := ids("flaky", 100)
	publish(t, e.js, jobs...)

	m := newMachine(10, 0)
	m.behave = func(r *statepipe.Request[Job]) {
		if r.Data.Delivered == 1 {
			r.Err = errors.New("the service is busy") // retryable
		}
	}
	p := newPipelines(t, m)
	var delays []uint64
	src := &spjs.Source[Job]{
		Consumer: cons, JetStream: e.js, Decode: decodeJob,
		Sink: &spjs.Sink[Job]{Subject: resultsSubj, Encode: encodeJob},
		Backoff: func(delivered uint64) time.Duration {
			delays = append(delays, delivered) // called on Run's goroutine only
			return 20 * time.Millisecond
		},
	}
	stop := runSource(t, src, p)
	waitFor(t, 20*time.Second, "every job acked", func() bool { return src.Stats().Done == uint64(len(jobs)) })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	settledAll(t, e, cons)
	wantResults(t, e, jobs)
	for _, id := range jobs {
		if got := m.deliveries(id); !slices.Equal(got, []uint64{1, 2}) {
			t.Fatalf("%s: deliveries seen %v, want [1 2]", id, got)
		}
	}
	if len(delays) != len(jobs) || slices.ContainsFunc(delays, func(d uint64) bool { return d != 1 }) {
		t.Errorf("Backoff called with %v, want 1 for every job", delays)
	}
	if s := src.Stats(); s.Retried != 100 || s.Redelivered != 100 || s.Done != 100 || s.DeadLettered != 0 {
		t.Errorf("stats: %+v", s)
	}
}

func TestDeadLetters(t *testing.T) {
	e := newEnv(t)
	cfg := consumerConfig()
	cfg.MaxDeliver = 3
	cons := e.consumer(t, cfg)
	good := ids("good", 20)
	bad := ids("bad", 5)        // Decode rejects them
	permanent := ids("perm", 5) // a stage fails them permanently
	hopeless := ids("hope", 5)  // a stage fails them every time, retryably
	publish(t, e.js, slices.Concat(good, bad, permanent, hopeless)...)

	m := newMachine(10, 0)
	m.behave = func(r *statepipe.Request[Job]) {
		switch {
		case strings.HasPrefix(r.Data.ID, "perm"):
			r.Err = spjs.Permanent(fmt.Errorf("%s is invalid", r.Data.ID))
		case strings.HasPrefix(r.Data.ID, "hope"):
			r.Err = errors.New("still busy")
		}
	}
	p := newPipelines(t, m)
	src := &spjs.Source[Job]{
		Consumer: cons, JetStream: e.js, Decode: decodeJob, DeadLetter: dlqSubject,
		Sink:    &spjs.Sink[Job]{Subject: resultsSubj, Encode: encodeJob},
		Backoff: func(uint64) time.Duration { return 10 * time.Millisecond },
	}
	stop := runSource(t, src, p)
	waitFor(t, 20*time.Second, "every job settled", func() bool {
		s := src.Stats()
		return s.Done == 20 && s.DeadLettered == 15
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	settledAll(t, e, cons)
	wantResults(t, e, good)

	type letter struct{ kind, reason, delivered, stream, subject string }
	got := map[string]letter{}
	for _, msg := range readStream(t, e.js, dlqStream) {
		h := msg.Headers()
		got[string(msg.Data())] = letter{h.Get(spjs.HeaderKind), h.Get(spjs.HeaderReason), h.Get(spjs.HeaderDelivered),
			h.Get(spjs.HeaderStream), h.Get(spjs.HeaderSubject)}
	}
	if len(got) != 15 {
		t.Fatalf("%d dead letters, want 15: %v", len(got), slices.Sorted(maps.Keys(got)))
	}
	check := func(ids []string, kind, reason, delivered string) {
		for _, id := range ids {
			l := got[id]
			if l.kind != kind || !strings.Contains(l.reason, reason) || l.delivered != delivered ||
				l.stream != jobsStream || l.subject != jobsSubject {
				t.Errorf("dead letter %s: %+v, want kind %s, reason with %q, delivered %s", id, l, kind, reason, delivered)
			}
		}
	}
	check(bad, spjs.KindDecode, "cannot decode", "1")
	check(permanent, spjs.KindPermanent, "is invalid", "1")
	check(hopeless, spjs.KindExhausted, "still busy", "3")
	for _, id := range hopeless {
		if d := m.deliveries(id); !slices.Equal(d, []uint64{1, 2, 3}) {
			t.Errorf("%s: deliveries %v, want [1 2 3]", id, d)
		}
	}
	if s := src.Stats(); s.DecodeFailed != 5 || s.Retried != 10 {
		t.Errorf("stats: %+v", s)
	}
}

// Without a dead-letter subject, a permanent failure is termed all the same.
func TestTermWithoutDeadLetter(t *testing.T) {
	e := newEnv(t)
	cons := e.consumer(t, consumerConfig())
	publish(t, e.js, "bad-1", "ok-1")
	src := &spjs.Source[Job]{Consumer: cons, JetStream: e.js, Decode: decodeJob}
	stop := runSource(t, src, newPipelines(t, newMachine(10, 0)))
	waitFor(t, 10*time.Second, "both settled", func() bool { s := src.Stats(); return s.Done == 1 && s.DeadLettered == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	settledAll(t, e, cons)
	if n := streamMsgs(t, e.js, dlqStream); n != 0 {
		t.Errorf("%d dead letters stored, want none", n)
	}
}

// A batch whose flush takes longer than AckWait is not redelivered: the
// Source reports its messages in progress.
func TestInProgressKeepsSlowBatch(t *testing.T) {
	e := newEnv(t)
	cfg := consumerConfig()
	cfg.AckWait = 500 * time.Millisecond
	cons := e.consumer(t, cfg)
	jobs := ids("slow", 20)
	publish(t, e.js, jobs...)

	m := newMachine(20, 1500*time.Millisecond) // three AckWaits per flush
	p := newPipelines(t, m)
	src := &spjs.Source[Job]{Consumer: cons, JetStream: e.js, Decode: decodeJob,
		Sink: &spjs.Sink[Job]{Subject: resultsSubj, Encode: encodeJob}}
	stop := runSource(t, src, p)
	waitFor(t, 20*time.Second, "every job acked", func() bool { return src.Stats().Done == uint64(len(jobs)) })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	settledAll(t, e, cons)
	wantResults(t, e, jobs)
	s := src.Stats()
	if s.Redelivered != 0 || s.Fetched != 20 || s.InProgress < 20 {
		t.Errorf("stats: %+v; want no redelivery and at least one in-progress report per job", s)
	}
	for _, id := range jobs {
		if d := m.deliveries(id); !slices.Equal(d, []uint64{1}) {
			t.Errorf("%s: deliveries %v, want [1]", id, d)
		}
	}
}

// Cancelling Run lets the requests in flight finish and be acked, leaves
// the rest in the stream, and a later Run processes them.
func TestDrainFinishesInFlight(t *testing.T) {
	e := newEnv(t)
	cons := e.consumer(t, consumerConfig())
	jobs := ids("drain", 200)
	publish(t, e.js, jobs...)

	m := newMachine(4, 20*time.Millisecond)
	p := newPipelines(t, m)
	src := &spjs.Source[Job]{Consumer: cons, JetStream: e.js, Decode: decodeJob, MaxInFlight: 16,
		FetchWait: 100 * time.Millisecond, Sink: &spjs.Sink[Job]{Subject: resultsSubj, Encode: encodeJob}}
	stop := runSource(t, src, p)
	waitFor(t, 20*time.Second, "some jobs acked", func() bool { return src.Stats().Done >= 20 })
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	s := src.Stats()
	t.Logf("drained in %v: %+v", took, s)
	if s.Held != 0 || s.Done+s.Released != s.Fetched || s.Done == uint64(len(jobs)) {
		t.Fatalf("after the drain: %+v", s)
	}
	// Finding 8 of issue 13: acks are fire-and-forget and the server
	// applies them on its own time, so reading the consumer right after
	// Run returned was flaky. Wait for the server to have applied them.
	// Released messages count as unacked until redelivered. So, rarely,
	// do a few the server sent for a pull the client had already
	// finished: never seen, they come back after AckWait (5s) instead of
	// at once, and the second run below takes them too. Nothing is lost
	// either way.
	waitFor(t, 5*time.Second, "the server to apply the drain's acks", func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && uint64(info.NumAckPending) >= s.Released &&
			info.NumPending+uint64(info.NumAckPending) == uint64(len(jobs))-s.Done
	})

	// A second run takes the rest.
	src2 := &spjs.Source[Job]{Consumer: cons, JetStream: e.js, Decode: decodeJob,
		Sink: &spjs.Sink[Job]{Subject: resultsSubj, Encode: encodeJob}}
	stop = runSource(t, src2, p)
	waitFor(t, 20*time.Second, "the rest acked", func() bool { return s.Done+src2.Stats().Done == uint64(len(jobs)) })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	settledAll(t, e, cons)
	wantResults(t, e, jobs)
	p.Close()
	checkNoLeaks(t)
}

// At the drain's deadline, the requests still inside are abandoned and
// their messages given back at once.
func TestDrainDeadline(t *testing.T) {
	e := newEnv(t)
	cons := e.consumer(t, consumerConfig())
	publish(t, e.js, ids("stuck", 8)...)

	m := newMachine(10, 0)
	m.behave = func(r *statepipe.Request[Job]) {
		<-r.Ctx.Done() // never finishes by itself
		r.Err = r.Ctx.Err()
	}
	p := newPipelines(t, m, statepipe.WithWorkers(8))
	src := &spjs.Source[Job]{Consumer: cons, JetStream: e.js, Decode: decodeJob, MaxInFlight: 8,
		DrainTimeout: 200 * time.Millisecond, FetchWait: 100 * time.Millisecond}
	stop := runSource(t, src, p)
	waitFor(t, 10*time.Second, "every job fetched", func() bool { return src.Stats().Fetched == 8 })
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("drain took %v, want about DrainTimeout (200ms)", took)
	}
	if s := src.Stats(); s.Released != 8 || s.Held != 0 || s.Done != 0 {
		t.Errorf("stats: %+v", s)
	}
	// Given back, not left to AckWait (5s): a fetch gets them again now.
	start = time.Now()
	batch, err := cons.Fetch(8, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for msg := range batch.Messages() {
		meta, _ := msg.Metadata()
		if meta.NumDelivered != 2 {
			t.Errorf("redelivered message: delivery %d, want 2", meta.NumDelivered)
		}
		_ = msg.Ack()
		n++
	}
	if n != 8 || time.Since(start) > time.Second {
		t.Errorf("fetched %d messages back in %v, want 8 at once", n, time.Since(start))
	}
	p.Close()
	checkNoLeaks(t)
}

func TestInvalidSource(t *testing.T) {
	e := newEnv(t)
	cons := e.consumer(t, consumerConfig())
	noAck := consumerConfig()
	noAck.Durable, noAck.AckPolicy = "noack", jetstream.AckNonePolicy
	consNoAck, err := e.js.CreateOrUpdateConsumer(context.Background(), resultsStream, noAck) // a work queue needs explicit acks
	if err != nil {
		t.Fatal(err)
	}
	p := newPipelines(t, newMachine(10, 0))
	sink := &spjs.Sink[Job]{Subject: resultsSubj, Encode: encodeJob}
	tests := []struct {
		name string
		src  *spjs.Source[Job]
		p    *statepipe.Pipelines[Job]
		want string
	}{
		{"no consumer", &spjs.Source[Job]{JetStream: e.js, Decode: decodeJob}, p, "nil Consumer"},
		{"no jetstream", &spjs.Source[Job]{Consumer: cons, Decode: decodeJob}, p, "nil JetStream"},
		{"no decode", &spjs.Source[Job]{Consumer: cons, JetStream: e.js}, p, "nil Decode"},
		{"negative", &spjs.Source[Job]{Consumer: cons, JetStream: e.js, Decode: decodeJob, MaxInFlight: -1}, p, "MaxInFlight"},
		{"wildcard dlq", &spjs.Source[Job]{Consumer: cons, JetStream: e.js, Decode: decodeJob, DeadLetter: "dlq.>"}, p, "DeadLetter"},
		{"sink subject", &spjs.Source[Job]{Consumer: cons, JetStream: e.js, Decode: decodeJob, Sink: &spjs.Sink[Job]{Encode: encodeJob}}, p, "Sink.Subject"},
		{"sink encode", &spjs.Source[Job]{Consumer: cons, JetStream: e.js, Decode: decodeJob, Sink: &spjs.Sink[Job]{Subject: "x"}}, p, "nil Sink.Encode"},
		{"ack none", &spjs.Source[Job]{Consumer: consNoAck, JetStream: e.js, Decode: decodeJob, Sink: sink}, p, "explicit acks"},
		{"no pipelines", &spjs.Source[Job]{Consumer: cons, JetStream: e.js, Decode: decodeJob}, nil, "nil Pipelines"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.src.Run(context.Background(), tt.p)
			if !errors.Is(err, statepipe.ErrInvalidOption) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run: %v, want ErrInvalidOption naming %q", err, tt.want)
			}
		})
	}
}

func TestRunTwice(t *testing.T) {
	e := newEnv(t)
	cons := e.consumer(t, consumerConfig())
	p := newPipelines(t, newMachine(10, 0))
	src := &spjs.Source[Job]{Consumer: cons, JetStream: e.js, Decode: decodeJob, FetchWait: 50 * time.Millisecond}
	stop := runSource(t, src, p)
	time.Sleep(50 * time.Millisecond)
	if err := src.Run(context.Background(), p); !errors.Is(err, spjs.ErrRunning) {
		t.Errorf("second Run: %v, want ErrRunning", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// Run returns the error when the consumer is deleted under it.
func TestConsumerDeleted(t *testing.T) {
	e := newEnv(t)
	cons := e.consumer(t, consumerConfig())
	p := newPipelines(t, newMachine(10, 0))
	src := &spjs.Source[Job]{Consumer: cons, JetStream: e.js, Decode: decodeJob, FetchWait: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
	errc := make(chan error, 1)
	go func() { errc <- src.Run(context.Background(), p) }()
	time.Sleep(100 * time.Millisecond)
	if err := e.js.DeleteConsumer(context.Background(), jobsStream, consumerName); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("Run returned nil after its consumer was deleted")
		}
		t.Logf("Run: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after its consumer was deleted")
	}
}

func TestPermanent(t *testing.T) {
	base := errors.New("bad input")
	err := spjs.Permanent(base)
	if !errors.Is(err, spjs.ErrPermanent) || !errors.Is(err, base) {
		t.Errorf("Permanent(err) = %v: want it to match ErrPermanent and err", err)
	}
	if wrapped := fmt.Errorf("stage: %w", err); !errors.Is(wrapped, spjs.ErrPermanent) {
		t.Error("a wrapped Permanent error does not match ErrPermanent")
	}
	if spjs.Permanent(nil) != nil {
		t.Error("Permanent(nil) != nil")
	}
	if errors.Is(base, spjs.ErrPermanent) {
		t.Error("a plain error matches ErrPermanent")
	}
}

func TestExponential(t *testing.T) {
	b := spjs.Exponential(time.Second, 10*time.Second)
	for delivered, want := range map[uint64]time.Duration{0: time.Second, 1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 100: 10 * time.Second} {
		if got := b(delivered); got != want {
			t.Errorf("delivery %d: %v, want %v", delivered, got, want)
		}
	}
}

// A partition's consumer with a pinned client feeds one Source at a time,
// and moves to another when that one stops: per-key order across
// processes, one partition per consumer.
func TestPinnedPartition(t *testing.T) {
	e := newEnv(t)
	cfg := consumerConfig()
	cfg.FilterSubject = jobsSubject
	cfg.PriorityPolicy = jetstream.PriorityPolicyPinned
	cfg.PriorityGroups = []string{"p"}
	cfg.PinnedTTL = 500 * time.Millisecond
	cfg.MaxAckPending = 1 // strict order: one message at a time
	e.consumer(t, cfg)

	// Two processes, each with its own connection.
	sources := make([]*spjs.Source[Job], 2)
	stops := make([]func() error, 2)
	var order [2][]string
	for i := range sources {
		_, js := connect(t, e.url)
		cons, err := js.Consumer(context.Background(), jobsStream, consumerName)
		if err != nil {
			t.Fatal(err)
		}
		m := newMachine(1, 0)
		m.behave = func(r *statepipe.Request[Job]) { order[i] = append(order[i], r.Data.ID) } // one at a time
		sources[i] = &spjs.Source[Job]{Consumer: cons, JetStream: js, Decode: decodeJob, PriorityGroup: "p",
			FetchWait: 100 * time.Millisecond}
		stops[i] = runSource(t, sources[i], newPipelines(t, m))
	}
	jobs := ids("pin", 50)
	publish(t, e.js, jobs...)
	acked := func() uint64 { return sources[0].Stats().Done + sources[1].Stats().Done }
	waitFor(t, 20*time.Second, "the first jobs", func() bool { return acked() == 50 })
	pinned := 0
	if sources[1].Stats().Done > 0 {
		pinned = 1
	}
	if other := sources[1-pinned].Stats().Fetched; other != 0 {
		t.Fatalf("both sources got messages of one partition (%d and %d)", sources[pinned].Stats().Fetched, other)
	}
	if !slices.Equal(order[pinned], jobs) {
		t.Fatalf("processed out of order: %v", order[pinned])
	}

	// The pinned one stops; the other takes over the partition.
	if err := stops[pinned](); err != nil {
		t.Fatal(err)
	}
	more := ids("pin2", 20)
	publish(t, e.js, more...)
	waitFor(t, 20*time.Second, "the partition to move", func() bool { return acked() == 70 })
	if !slices.Equal(order[1-pinned], more) {
		t.Fatalf("after the move: %v", order[1-pinned])
	}
}

// Pipelines closed under a running Source end the Run with ErrClosed,
// and the messages it held go back to the stream.
func TestPipelinesClosed(t *testing.T) {
	e := newEnv(t)
	cons := e.consumer(t, consumerConfig())
	publish(t, e.js, ids("orphan", 10)...)
	p := newPipelines(t, newMachine(10, 0))
	p.Close()
	src := &spjs.Source[Job]{Consumer: cons, JetStream: e.js, Decode: decodeJob, FetchWait: 100 * time.Millisecond}
	if err := src.Run(context.Background(), p); !errors.Is(err, statepipe.ErrClosed) {
		t.Fatalf("Run on closed Pipelines: %v, want ErrClosed", err)
	}
	if s := src.Stats(); s.Done != 0 || s.Held != 0 || s.Released != s.Fetched {
		t.Errorf("stats: %+v", s)
	}
}
