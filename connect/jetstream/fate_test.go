package jetstream_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/statepipe/statepipe"
	spjs "github.com/statepipe/statepipe/connect/jetstream"
)

// Finding 6 of issue 13: a message whose last allowed delivery went to a
// process that died was never seen to fail, so nothing dead-lettered it;
// with MaxDeliver 3 it stayed in the work queue for good. Here three
// "processes" in turn take every message and die with it (fetches never
// settled); a Source then dead-letters each from the server's
// max-deliveries advisory and removes it from the work queue.
func TestLastDeliveryLostWithItsProcessIsDeadLettered(t *testing.T) {
	e := newEnv(t)
	cfg := consumerConfig()
	cfg.MaxDeliver = 3
	cfg.AckWait = time.Second
	cons := e.consumer(t, cfg)
	jobs := ids("lost", 15)
	publish(t, e.js, jobs...)
	for round := uint64(1); round <= 3; round++ {
		got := 0
		for got < len(jobs) {
			batch, err := cons.Fetch(len(jobs)-got, jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for msg := range batch.Messages() {
				if meta, _ := msg.Metadata(); meta.NumDelivered != round {
					t.Fatalf("delivery %d in round %d", meta.NumDelivered, round)
				}
				n++
			}
			if n == 0 {
				t.Fatalf("round %d: %d of %d delivered: %v", round, got, len(jobs), batch.Error())
			}
			got += n
		}
	}
	src := &spjs.Source[Job]{Consumer: cons, JetStream: e.js, Decode: decodeJob, DeadLetter: dlqSubject,
		FetchWait: 100 * time.Millisecond}
	runUntil(t, src, newPipelines(t, newMachine(10, 0)), 20*time.Second, "every lost message dead-lettered", func(s spjs.Stats) bool { return s.Exhausted == uint64(len(jobs)) })
	settledAll(t, e, cons)
	var got []string
	for _, msg := range readStream(t, e.js, dlqStream) {
		h := msg.Headers()
		if h.Get(spjs.HeaderKind) != spjs.KindExhausted || h.Get(spjs.HeaderDelivered) != "3" ||
			h.Get(spjs.HeaderStream) != jobsStream || h.Get(spjs.HeaderSubject) != jobsSubject ||
			!strings.Contains(h.Get(spjs.HeaderReason), "after 3 deliveries") {
			t.Errorf("dead letter %s: headers %v", msg.Data(), h)
		}
		got = append(got, string(msg.Data()))
	}
	slices.Sort(got)
	if !slices.Equal(got, jobs) {
		t.Fatalf("dead letters %v, want %v", got, jobs)
	}
	if s := src.Stats(); s.Fetched != 0 || s.DeadLettered != 0 {
		t.Errorf("stats: %+v; the Source itself should have been delivered nothing", s)
	}
}

// Issue 11: a request whose in-process retries ran out (*RetryError) is
// not permanent: the log delivers it again, and on the last delivery it
// is dead-lettered as exhausted, like any other retryable failure.
func TestExhaustedRetriesAreRedeliveredThenDeadLettered(t *testing.T) {
	e := newEnv(t)
	cfg := consumerConfig()
	cfg.MaxDeliver = 3
	cons := e.consumer(t, cfg)
	publish(t, e.js, "third-time-lucky", "hopeless")
	m := newMachine(10, 0)
	m.behave = func(r *statepipe.Request[Job]) {
		if r.Data.ID == "hopeless" || r.Data.Delivered < 3 {
			r.Err = &statepipe.RetryError{Stage: "Start", Attempts: 4, Err: errors.New("service busy")}
		}
	}
	src := &spjs.Source[Job]{Consumer: cons, JetStream: e.js, Decode: decodeJob, DeadLetter: dlqSubject,
		FetchWait: 100 * time.Millisecond, Backoff: func(uint64) time.Duration { return 10 * time.Millisecond },
		Sink: &spjs.Sink[Job]{Subject: resultsSubj, Encode: encodeJob}}
	runUntil(t, src, newPipelines(t, m), 20*time.Second, "both settled", func(s spjs.Stats) bool { return s.Done == 1 && s.DeadLettered == 1 })
	for _, id := range []string{"third-time-lucky", "hopeless"} {
		if d := m.deliveries(id); !slices.Equal(d, []uint64{1, 2, 3}) {
			t.Errorf("%s: deliveries %v, want [1 2 3]", id, d)
		}
	}
	wantResults(t, e, []string{"third-time-lucky"})
	dl := readStream(t, e.js, dlqStream)
	if len(dl) != 1 || string(dl[0].Data()) != "hopeless" || dl[0].Headers().Get(spjs.HeaderKind) != spjs.KindExhausted ||
		!strings.Contains(dl[0].Headers().Get(spjs.HeaderReason), "failed 4 times: service busy") {
		t.Fatalf("dead letters: %v", dl)
	}
	if s := src.Stats(); s.Retried != 4 {
		t.Errorf("stats: %+v, want 4 retries", s)
	}
}

// The result carries the input's headers (trace context, correlation ID),
// but not NATS's own.
func TestResultCarriesInputHeaders(t *testing.T) {
	e := newEnv(t)
	cons := e.consumer(t, consumerConfig())
	in := nats.NewMsg(jobsSubject)
	in.Data = []byte("traced")
	in.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	in.Header.Set("Correlation-Id", "order-42")
	in.Header.Set(jetstream.MsgIDHeader, "input-id")
	if _, err := e.js.PublishMsg(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	src := &spjs.Source[Job]{Consumer: cons, JetStream: e.js, Decode: decodeJob, FetchWait: 100 * time.Millisecond,
		Sink: &spjs.Sink[Job]{Subject: resultsSubj, Encode: encodeJob}}
	runUntil(t, src, newPipelines(t, newMachine(10, 0)), 10*time.Second, "acked", func(s spjs.Stats) bool { return s.Done == 1 })
	out := readStream(t, e.js, resultsStream)
	if len(out) != 1 {
		t.Fatalf("%d results", len(out))
	}
	h := out[0].Headers()
	if h.Get("traceparent") != in.Header.Get("traceparent") || h.Get("Correlation-Id") != "order-42" {
		t.Errorf("result headers %v: the trace context and correlation ID are missing", h)
	}
	if id := h.Get(jetstream.MsgIDHeader); id == "input-id" || !strings.HasPrefix(id, jobsStream+":") {
		t.Errorf("result's message ID %q, want the Sink's own", id)
	}
}

// Finding 2 of issue 13, the other half: two consumers of one stream
// writing to one results stream each store their results; with
// "STREAM:SEQ" the second consumer's were dropped as duplicates.
func TestTwoConsumersEachStoreTheirResults(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: "SHARED", Subjects: []string{"shared"}}); err != nil {
		t.Fatal(err)
	}
	jobs := ids("shared", 50)
	for _, id := range jobs {
		if _, err := e.js.Publish(ctx, "shared", []byte(id)); err != nil {
			t.Fatal(err)
		}
	}
	var srcs []*spjs.Source[Job]
	for _, name := range []string{"billing", "audit"} {
		cfg := consumerConfig()
		cfg.Durable = name
		cons, err := e.js.CreateOrUpdateConsumer(ctx, "SHARED", cfg)
		if err != nil {
			t.Fatal(err)
		}
		src := &spjs.Source[Job]{Consumer: cons, JetStream: e.js, Decode: decodeJob, FetchWait: 100 * time.Millisecond,
			Sink: &spjs.Sink[Job]{Subject: resultsSubj, Encode: encodeJob}}
		runUntil(t, src, newPipelines(t, newMachine(10, 0)), 10*time.Second, name+" acked", func(s spjs.Stats) bool { return s.Done == uint64(len(jobs)) })
		srcs = append(srcs, src)
	}
	got, _ := resultIDs(t, e)
	for _, id := range jobs {
		if got[id] != 2 {
			t.Fatalf("result %s: %d copies, want one per consumer", id, got[id])
		}
	}
	if d := srcs[1].Stats().Duplicates; d != 0 {
		t.Errorf("the second consumer's results: %d taken for duplicates", d)
	}
}
