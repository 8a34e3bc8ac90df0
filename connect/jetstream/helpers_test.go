package jetstream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/statepipe/statepipe"
	spjs "github.com/statepipe/statepipe/connect/jetstream"
	"github.com/statepipe/statepipe/connect/jetstream/embedded"
)

// Subjects and names shared by the tests and the worker processes.
const (
	jobsStream    = "JOBS"
	jobsSubject   = "jobs"
	resultsStream = "RESULTS"
	resultsSubj   = "results"
	dlqStream     = "DLQ"
	dlqSubject    = "dlq"
	consumerName  = "workers"
)

// Job is the tests' data: the message body is its ID.
type Job struct {
	ID        string
	Delivered uint64 // the delivery that Start saw
}

func decodeJob(b []byte) (Job, error) {
	if bytes.HasPrefix(b, []byte("bad")) {
		return Job{}, fmt.Errorf("cannot decode %q", b)
	}
	return Job{ID: string(b)}, nil
}

func encodeJob(j Job) ([]byte, error) { return []byte(j.ID), nil }

// machine is the tests' state machine: Start (with an optional behaviour
// per request), a Batcher whose flush may sleep, then Done.
type machine struct {
	bulk   *statepipe.Batcher[Job]
	done   statepipe.Stage[Job]
	behave func(r *statepipe.Request[Job]) // in Start; may set Err or Next
	sleep  time.Duration                   // in each flush
	work   int                             // rounds of CPU work per request, in Start

	mu        sync.Mutex
	delivered map[string][]uint64 // NumDelivered seen in Start, by job
}

func newMachine(maxItems int, sleep time.Duration) *machine {
	m := &machine{sleep: sleep, delivered: map[string][]uint64{}}
	m.done = m.Done
	m.bulk = statepipe.NewBatcher(m.flush, statepipe.MaxItems(maxItems), statepipe.MaxWait(5*time.Millisecond))
	return m
}

func (m *machine) Start(r statepipe.Request[Job]) statepipe.Request[Job] {
	if msg := spjs.Message(r.Ctx); msg != nil {
		meta, err := msg.Metadata()
		if err != nil {
			r.Err = err
			return r
		}
		r.Data.Delivered = meta.NumDelivered
		m.mu.Lock()
		m.delivered[r.Data.ID] = append(m.delivered[r.Data.ID], meta.NumDelivered)
		m.mu.Unlock()
	}
	if m.work > 0 {
		burn(r.Data.ID, m.work)
	}
	if m.behave != nil {
		m.behave(&r)
		if r.Err != nil {
			return r
		}
	}
	r.Next = m.done
	return m.bulk.Add(r)
}

func (m *machine) flush(ctx context.Context, batch []statepipe.Request[Job]) error {
	if m.sleep > 0 {
		time.Sleep(m.sleep)
	}
	return nil
}

func (m *machine) Done(r statepipe.Request[Job]) statepipe.Request[Job] { return r }
func (m *machine) Close()                                               {}

// deliveries returns what Start saw of job id.
func (m *machine) deliveries(id string) []uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]uint64(nil), m.delivered[id]...)
}

// burn does CPU work standing for a real stage's.
func burn(seed string, rounds int) {
	h := uint64(14695981039346656037)
	for i := range rounds * 1000 {
		h ^= uint64(seed[i%len(seed)])
		h *= 1099511628211
	}
	if h == 42 {
		runtime.Gosched()
	}
}

// env is a server with the tests' streams, and a connection to it.
type env struct {
	url      string
	shutdown func()
	nc       *nats.Conn
	js       jetstream.JetStream
}

// consumerConfig is the tests' consumer; each test adjusts it.
func consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       consumerName,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       5 * time.Second,
		MaxDeliver:    5,
		MaxAckPending: 10_000,
	}
}

// newEnv starts a server in a temporary directory with the streams JOBS
// (a work queue), RESULTS (de-duplicating for 5 minutes) and DLQ, and
// connects to it. Everything stops at the end of the test.
func newEnv(t testing.TB) *env {
	t.Helper()
	url, shutdown, err := embedded.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(shutdown)
	e := &env{url: url, shutdown: shutdown}
	e.nc, e.js = connect(t, url)
	createStreams(t, e.js)
	return e
}

func connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func createStreams(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	ctx := context.Background()
	for _, cfg := range []jetstream.StreamConfig{
		{Name: jobsStream, Subjects: []string{jobsSubject}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage},
		{Name: resultsStream, Subjects: []string{resultsSubj}, Duplicates: 5 * time.Minute, Storage: jetstream.FileStorage},
		{Name: dlqStream, Subjects: []string{dlqSubject}, Storage: jetstream.FileStorage},
	} {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *env) consumer(t testing.TB, cfg jetstream.ConsumerConfig) jetstream.Consumer {
	t.Helper()
	c, err := e.js.CreateOrUpdateConsumer(context.Background(), jobsStream, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// publish publishes bodies to the jobs subject and waits for the stream's
// acks.
func publish(t testing.TB, js jetstream.JetStream, bodies ...string) {
	t.Helper()
	for _, b := range bodies {
		if _, err := js.PublishAsync(jobsSubject, []byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("publishing timed out")
	}
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%05d", prefix, i)
	}
	return out
}

// readStream returns every message of a stream, in order.
func readStream(t testing.TB, js jetstream.JetStream, stream string) []jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	n := s.CachedInfo().State.Msgs
	if n == 0 {
		return nil
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for uint64(len(out)) < n {
		batch, err := c.Fetch(int(min(n-uint64(len(out)), 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			out = append(out, m)
			got++
		}
		if got == 0 {
			t.Fatalf("read %d of %d messages of %s: %v", len(out), n, stream, batch.Error())
		}
	}
	return out
}

// streamMsgs returns how many messages a stream holds.
func streamMsgs(t testing.TB, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

// waitFor polls cond until it holds, or fails the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settledAll waits until the consumer has nothing pending or unacked
// and the work queue is empty.
func settledAll(t testing.TB, e *env, c jetstream.Consumer) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := c.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		msgs := streamMsgs(t, e.js, jobsStream)
		if info.NumPending == 0 && info.NumAckPending == 0 && msgs == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer not settled: %d pending, %d unacked, %d in the stream",
				info.NumPending, info.NumAckPending, msgs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runSource runs src on p in a goroutine; stop cancels it and returns
// Run's error, waiting at most wait.
func runSource(t testing.TB, src *spjs.Source[Job], p *statepipe.Pipelines[Job]) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- src.Run(ctx, p) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(60 * time.Second):
				err = errors.New("Run did not return within 60s of its cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// checkNoLeaks fails the test if a goroutine running statepipe code (the
// core's or this module's) is left, other than the tests' own.
func checkNoLeaks(t testing.TB) {
	t.Helper()
	var leaks []string
	deadline := time.Now().Add(3 * time.Second)
	for {
		leaks = leaks[:0]
		buf := make([]byte, 4<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "github.com/statepipe/statepipe") &&
				!strings.Contains(g, "testing.tRunner") && !strings.Contains(g, "testing.(*M)") &&
				!strings.Contains(g, "runtime.Stack") {
				leaks = append(leaks, g)
			}
		}
		if len(leaks) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left:\n%s", len(leaks), strings.Join(leaks, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runUntil runs src on p until cond holds (failing the test after
// timeout), then drains it and fails the test if Run returns an error.
func runUntil(t testing.TB, src *spjs.Source[Job], p *statepipe.Pipelines[Job], timeout time.Duration, what string, cond func(spjs.Stats) bool) {
	t.Helper()
	stop := runSource(t, src, p)
	waitFor(t, timeout, what, func() bool { return cond(src.Stats()) })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}
