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

// outage makes publishes to subj go unanswered: the stream that captured
// it captures another subject for now, and a plain subscriber swallows
// what is published to subj. restore undoes both.
func outage(t testing.TB, e *env, stream, subj string) (restore func()) {
	t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	off := cfg
	off.Subjects = []string{subj + ".off"}
	if _, err := e.js.UpdateStream(ctx, off); err != nil {
		t.Fatal(err)
	}
	sub, err := e.nc.Subscribe(subj, func(m *nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() {
		_ = sub.Unsubscribe()
		if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
}

// sourceJS is a JetStream on the env's connection for a Source, whose
// asynchronous publishes time out after timeout: the tests' own e.js
// waits for all its publishes, and a Source's may go unanswered.
func (e *env) sourceJS(t testing.TB, timeout time.Duration) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(e.nc, jetstream.WithPublishAsyncTimeout(timeout))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// Finding 1 of issue 13: every result publish of a chunk shared one
// timer, so the second unanswered publish waited for good; the worker
// froze, held its messages and ignored its drain. Here the results stream
// stops answering for 2s: nothing freezes, nothing is lost, and the drain
// keeps its deadline, also when it starts during an outage.
func TestResultsOutageNeitherFreezesNorLoses(t *testing.T) {
	e := newEnv(t)
	cons := e.consumer(t, consumerConfig())
	jobs := ids("out", 200)
	m := newMachine(20, 0)
	p := newPipelines(t, m)
	src := &spjs.Source[Job]{Consumer: cons, JetStream: e.sourceJS(t, 200*time.Millisecond), Decode: decodeJob, MaxInFlight: 64,
		FetchWait: 100 * time.Millisecond, PublishTimeout: 200 * time.Millisecond, DrainTimeout: time.Second,
		Backoff: func(uint64) time.Duration { return 500 * time.Millisecond }, // 5 deliveries outlast the outage
		Sink:    &spjs.Sink[Job]{Subject: resultsSubj, Encode: encodeJob}}
	stop := runSource(t, src, p)
	waitFor(t, 10*time.Second, "a first fetch", func() bool { return src.Stats().Lag >= 0 })
	restore := outage(t, e, resultsStream, resultsSubj)
	publish(t, e.js, jobs...)
	time.Sleep(2 * time.Second)
	restore()
	waitFor(t, 20*time.Second, "every job acked", func() bool { return src.Stats().Done == uint64(len(jobs)) })
	wantResults(t, e, jobs)

	// A drain in the middle of an outage keeps its deadline, and gives
	// back what it held.
	restore = outage(t, e, resultsStream, resultsSubj)
	more := ids("during", 100)
	publish(t, e.js, more...)
	waitFor(t, 10*time.Second, "the new jobs fetched", func() bool { return src.Stats().Fetched >= uint64(len(jobs)+64) })
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2500*time.Millisecond {
		t.Errorf("drain took %v against DrainTimeout 1s", took)
	}
	s := src.Stats()
	t.Logf("after the drain: %+v", s)
	if s.Held != 0 || s.Done != uint64(len(jobs)) {
		t.Errorf("after the drain: %+v", s)
	}
	restore()
	src2 := &spjs.Source[Job]{Consumer: cons, JetStream: e.sourceJS(t, time.Second), Decode: decodeJob,
		FetchWait: 100 * time.Millisecond, Sink: &spjs.Sink[Job]{Subject: resultsSubj, Encode: encodeJob}}
	stop = runSource(t, src2, p)
	waitFor(t, 20*time.Second, "the rest acked", func() bool { return src2.Stats().Done == uint64(len(more)) })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	settledAll(t, e, cons)
	wantResults(t, e, slices.Concat(jobs, more))
}

// Finding 2 of issue 13: result IDs were "STREAM:SEQ", so after the work
// stream was made again the new messages' results were taken for
// duplicates of the old ones and dropped.
func TestRecreatedWorkStreamGetsItsOwnResults(t *testing.T) {
	e := newEnv(t)
	jobs := ids("first", 10)
	publish(t, e.js, jobs...)
	run := func(want uint64) *spjs.Source[Job] {
		cons := e.consumer(t, consumerConfig())
		src := &spjs.Source[Job]{Consumer: cons, JetStream: e.js, Decode: decodeJob, FetchWait: 100 * time.Millisecond,
			Sink: &spjs.Sink[Job]{Subject: resultsSubj, Encode: encodeJob}}
		runUntil(t, src, newPipelines(t, newMachine(10, 0)), 10*time.Second, "acked", func(s spjs.Stats) bool { return s.Done == want })
		return src
	}
	run(10)
	if err := e.js.DeleteStream(context.Background(), jobsStream); err != nil {
		t.Fatal(err)
	}
	createStreams(t, e.js)
	second := ids("second", 10)
	publish(t, e.js, second...)
	s := run(10)
	t.Logf("%+v", s.Stats())
	wantResults(t, e, slices.Concat(jobs, second))
}

// Finding 4 of issue 13: a slow dead-letter publish ran inline, on the
// goroutine that sends in-progress reports (and, for decode failures, on
// the fetcher), so a long batch was redelivered mid-flight and the drain
// overran its deadline. Here the dead-letter stream does not answer.
func TestSlowDeadLettersStopNeitherProgressNorIntake(t *testing.T) {
	e := newEnv(t)
	cfg := consumerConfig()
	cfg.AckWait = 600 * time.Millisecond
	cons := e.consumer(t, cfg)
	good := ids("good", 10)
	perm := ids("perm", 3)
	bad := ids("bad", 3) // Decode rejects them: dead-lettered from the fetcher
	m := newMachine(10, 2*time.Second)
	m.behave = func(r *statepipe.Request[Job]) {
		if strings.HasPrefix(r.Data.ID, "perm") {
			r.Err = spjs.Permanent(errors.New("no"))
		}
	}
	p := newPipelines(t, m)
	src := &spjs.Source[Job]{Consumer: cons, JetStream: e.sourceJS(t, 3*time.Second), Decode: decodeJob, DeadLetter: dlqSubject,
		PublishTimeout: 3 * time.Second, DrainTimeout: time.Second, FetchWait: 100 * time.Millisecond,
		Sink: &spjs.Sink[Job]{Subject: resultsSubj, Encode: encodeJob}}
	stop := runSource(t, src, p)
	waitFor(t, 10*time.Second, "a first fetch", func() bool { return src.Stats().Lag >= 0 })
	restore := outage(t, e, dlqStream, dlqSubject)
	defer restore()
	publish(t, e.js, slices.Concat(perm, bad, good)...)
	waitFor(t, 20*time.Second, "good acked", func() bool { return src.Stats().Done == uint64(len(good)) })
	for _, id := range good {
		if d := m.deliveries(id); !slices.Equal(d, []uint64{1}) {
			t.Errorf("%s: deliveries %v", id, d)
		}
	}
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2500*time.Millisecond {
		t.Errorf("drain took %v against DrainTimeout 1s", took)
	}
}

// Finding 5 of issue 13: with MaxInFlight above the Pipelines' bound, a
// fetch took messages the group had no room for; they waited unseen (no
// in-progress reports), expired and were processed twice.
func TestFetchNeverExceedsTheGroupsRoom(t *testing.T) {
	e := newEnv(t)
	cfg := consumerConfig()
	cfg.AckWait = time.Second
	cons := e.consumer(t, cfg)
	jobs := ids("clamp", 40)
	publish(t, e.js, jobs...)
	m := newMachine(8, 500*time.Millisecond)
	p := newPipelines(t, m, statepipe.WithMaxInFlight(8))
	src := &spjs.Source[Job]{Consumer: cons, JetStream: e.js, Decode: decodeJob, MaxInFlight: 64, FetchWait: 100 * time.Millisecond}
	stop := runSource(t, src, p)
	waitFor(t, 30*time.Second, "acked", func() bool { return src.Stats().Done == 40 })
	_ = stop()
	for _, id := range jobs {
		if d := m.deliveries(id); !slices.Equal(d, []uint64{1}) {
			t.Errorf("%s: deliveries %v", id, d)
		}
	}
	if s := src.Stats(); s.Redelivered != 0 {
		t.Errorf("stats: %+v", s)
	}
}
