package kafka_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/statepipe/statepipe"
	spk "github.com/statepipe/statepipe/connect/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Topics and the group shared by the tests and the worker processes.
const (
	jobsTopic    = "jobs"
	resultsTopic = "results"
	dlqTopic     = "dlq"
	group        = "workers"
)

// Job is the tests' data: the record value is its ID; a result tells
// which record it is of and who made it.
type Job struct {
	ID        string
	Partition int32
	Offset    int64
	Worker    string
	Attempt   int
}

func decodeJob(b []byte) (Job, error) {
	if strings.HasPrefix(string(b), "bad") {
		return Job{}, fmt.Errorf("cannot decode %q", b)
	}
	return Job{ID: string(b)}, nil
}

func encodeJob(j Job) ([]byte, error) { return json.Marshal(j) }

// groupTimeouts make a dead member's partitions move within seconds.
var groupTimeouts = []kgo.Opt{
	kgo.SessionTimeout(1500 * time.Millisecond),
	kgo.HeartbeatInterval(150 * time.Millisecond),
	kgo.RebalanceTimeout(10 * time.Second),
	kgo.FetchMaxWait(100 * time.Millisecond),
}

// newCluster starts an in-process cluster with the jobs topic of the
// given partitions and the results and dead-letter topics, and closes it
// at the end of the test.
func newCluster(t testing.TB, partitions int32) (addrs []string, adm *kadm.Client) {
	t.Helper()
	_, addrs, adm = newClusterC(t, partitions)
	return addrs, adm
}

// newClusterC is newCluster that also returns the cluster, for tests
// that control its requests.
func newClusterC(t testing.TB, partitions int32) (c *kfake.Cluster, addrs []string, adm *kadm.Client) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	addrs = c.ListenAddrs()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	adm = kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := spk.EnsureTopics(ctx, adm,
		spk.Topic{Name: jobsTopic, Partitions: partitions},
		spk.Topic{Name: resultsTopic, Partitions: 1},
		spk.Topic{Name: dlqTopic, Partitions: 1},
	); err != nil {
		t.Fatal(err)
	}
	return c, addrs, adm
}

// produceJobs produces the ids to the jobs topic, each with key key(i)
// (nil: no key, spread over the partitions round robin).
func produceJobs(t testing.TB, addrs []string, ids []string, key func(i int) string) {
	t.Helper()
	opts := []kgo.Opt{kgo.SeedBrokers(addrs...)}
	if key == nil {
		opts = append(opts, kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	recs := make([]*kgo.Record, len(ids))
	for i, id := range ids {
		recs[i] = &kgo.Record{Topic: jobsTopic, Value: []byte(id)}
		if key != nil {
			recs[i].Key = []byte(key(i))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%05d", prefix, i)
	}
	return out
}

// readTopic reads every committed record of topic. The records are all
// written before it is called; it reads until the topic's end offsets
// are reached, or once it has read some, with nothing more for half a second (the
// end offsets count transaction markers and aborted records, which a
// committed read never returns).
func readTopic(t testing.TB, addrs []string, adm *kadm.Client, topic string) []*kgo.Record {
	t.Helper()
	return readTopicAs(t, addrs, adm, topic, kgo.ReadCommitted())
}

// readTopicAs is readTopic at the given isolation level.
func readTopicAs(t testing.TB, addrs []string, adm *kadm.Client, topic string, level kgo.IsolationLevel) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	left := endOffsets(t, adm, topic)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(level),
		kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	quiet := 0
	for len(left) > 0 && quiet < 5 {
		pctx, pcancel := context.WithTimeout(ctx, 100*time.Millisecond)
		fs := cl.PollFetches(pctx)
		pcancel()
		if err := ctx.Err(); err != nil {
			t.Fatalf("reading %s: %v with %v still to read", topic, err, left)
		}
		if fs.NumRecords() == 0 {
			if len(out) > 0 {
				quiet++
			}
			continue
		}
		quiet = 0
		fs.EachRecord(func(r *kgo.Record) {
			out = append(out, r)
			if end, ok := left[r.Partition]; ok && r.Offset+1 >= end {
				delete(left, r.Partition)
			}
		})
	}
	return out
}

// results decodes the results topic.
func results(t testing.TB, addrs []string, adm *kadm.Client) []Job {
	t.Helper()
	var out []Job
	for _, r := range readTopic(t, addrs, adm, resultsTopic) {
		var j Job
		if err := json.Unmarshal(r.Value, &j); err != nil {
			t.Fatalf("result %q: %v", r.Value, err)
		}
		out = append(out, j)
	}
	return out
}

// wantEveryResult checks that every id has a result, and at most max.
func wantEveryResult(t testing.TB, got []Job, want []string, max int) map[string]int {
	t.Helper()
	n := map[string]int{}
	for _, j := range got {
		n[j.ID]++
	}
	for _, id := range want {
		switch c := n[id]; {
		case c == 0:
			t.Errorf("no result for %s", id)
		case c > max:
			t.Errorf("%d results for %s, want at most %d", c, id, max)
		}
	}
	if len(n) != len(want) {
		t.Errorf("results for %d ids, want %d", len(n), len(want))
	}
	return n
}

// lag is the group's lag on the jobs topic, from the brokers: the
// records after each partition's committed offset; -1 while some
// partition with records has no commit.
func lag(t testing.TB, adm *kadm.Client) int64 {
	t.Helper()
	commits := committed(t, adm)
	var total int64
	for p, end := range endOffsets(t, adm, jobsTopic) {
		at, ok := commits[p]
		if !ok {
			return -1
		}
		total += end - at
	}
	return total
}

// endOffsets returns the end offsets of topic's partitions that have
// records.
func endOffsets(t testing.TB, adm *kadm.Client, topic string) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The admin client's metadata may still say the topic does not
	// exist, from before it was created: ask again.
	for {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		if ends.Error() == nil {
			out := map[int32]int64{}
			ends.Each(func(o kadm.ListedOffset) {
				if o.Offset > 0 {
					out[o.Partition] = o.Offset
				}
			})
			return out
		}
		if ctx.Err() != nil {
			t.Fatalf("end offsets of %s: %v", topic, ends.Error())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// committed returns the group's committed offsets on the jobs topic.
func committed(t testing.TB, adm *kadm.Client) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	os, err := adm.FetchOffsets(ctx, group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return nil // no member has joined yet
	} else if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	os.Each(func(o kadm.OffsetResponse) {
		if o.Topic == jobsTopic && o.Err == nil {
			out[o.Partition] = o.At
		}
	})
	return out
}

// machine is the tests' state machine: Start (with an optional behaviour
// per request), a Batcher whose flush may sleep, then Done, which notes
// the record as finished.
type machine struct {
	worker string
	bulk   *statepipe.Batcher[Job]
	done   statepipe.Stage[Job]
	behave func(r *statepipe.Request[Job]) // in Start; may set Err or block
	sleep  time.Duration                   // in each flush
	work   int                             // rounds of CPU work per request, in Start

	mu       sync.Mutex
	finished map[int32]map[int64]bool // by partition and offset, in Done
	running  int                      // requests between Start and Done
	peak     int
}

func newMachine(worker string, maxItems int, sleep time.Duration) *machine {
	m := &machine{worker: worker, sleep: sleep, finished: map[int32]map[int64]bool{}}
	m.done = m.Done
	m.bulk = statepipe.NewBatcher(m.flush, statepipe.MaxItems(maxItems), statepipe.MaxWait(2*time.Millisecond))
	return m
}

func (m *machine) Start(r statepipe.Request[Job]) statepipe.Request[Job] {
	if rec := spk.Record(r.Ctx); rec != nil {
		r.Data.Partition, r.Data.Offset = rec.Partition, rec.Offset
	}
	r.Data.Worker = m.worker
	r.Data.Attempt = spk.Attempt(r.Ctx)
	m.mu.Lock()
	m.running++
	m.peak = max(m.peak, m.running)
	m.mu.Unlock()
	if m.work > 0 {
		burn(r.Data.ID, m.work)
	}
	if m.behave != nil {
		m.behave(&r)
		if r.Err != nil {
			m.mu.Lock()
			m.running--
			m.mu.Unlock()
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

func (m *machine) Done(r statepipe.Request[Job]) statepipe.Request[Job] {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.running--
	if m.finished[r.Data.Partition] == nil {
		m.finished[r.Data.Partition] = map[int64]bool{}
	}
	m.finished[r.Data.Partition][r.Data.Offset] = true
	return r
}

func (m *machine) Close() {}

// finishedBelow reports the first offset below upTo of partition that
// the machines did not finish, or -1.
func finishedBelow(ms []*machine, partition int32, upTo int64) int64 {
	for o := int64(0); o < upTo; o++ {
		ok := false
		for _, m := range ms {
			m.mu.Lock()
			ok = ok || m.finished[partition][o]
			m.mu.Unlock()
		}
		if !ok {
			return o
		}
	}
	return -1
}

func newPipelines(t testing.TB, m *machine, opts ...statepipe.Option) *statepipe.Pipelines[Job] {
	t.Helper()
	p, err := statepipe.New[Job](m, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// newSource returns a Source on the tests' topics with the tests' short
// timeouts.
func newSource(addrs []string) *spk.Source[Job] {
	return &spk.Source[Job]{
		Brokers: addrs, Group: group, Topics: []string{jobsTopic},
		Opts:           groupTimeouts,
		Decode:         decodeJob,
		DeadLetter:     dlqTopic,
		Sink:           &spk.Sink[Job]{Topic: resultsTopic, Encode: encodeJob},
		CommitInterval: 50 * time.Millisecond,
		Backoff:        func(int) time.Duration { return 5 * time.Millisecond },
	}
}

// runSource runs src on p in a goroutine; the returned stop cancels it
// and returns Run's error.
func runSource(t testing.TB, src *spk.Source[Job], p *statepipe.Pipelines[Job]) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, p) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(60 * time.Second):
				err = errors.New("Run did not return 60s after its context ended")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// runToEnd runs src on p until it has finished n records and the group
// has committed them all, then stops it.
func runToEnd(t testing.TB, adm *kadm.Client, src *spk.Source[Job], p *statepipe.Pipelines[Job], n int) {
	t.Helper()
	stop := runSource(t, src, p)
	waitFor(t, 30*time.Second, "every record finished and committed", func() bool {
		return src.Stats().Done == uint64(n) && lag(t, adm) == 0
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds, failing the test after timeout.
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
