package kafka_test

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/statepipe/statepipe"
	"github.com/statepipe/statepipe/connect"
	spk "github.com/statepipe/statepipe/connect/kafka"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Records that fail for good reach the dead-letter topic with the reason,
// the kind and where they came from; records that fail for now run again
// and succeed; all of them are committed.
func TestDeadLettersCarryTheirReason(t *testing.T) {
	addrs, adm := newCluster(t, 2)
	good := ids("ok", 50)
	jobs := append([]string{"bad-1", "perm-1", "flaky-1", "once-1", "panic-1"}, good...)
	produceJobs(t, addrs, jobs, nil)
	m := newMachine("w", 10, 0)
	var mu sync.Mutex
	runs := map[string]int{}
	m.behave = func(r *statepipe.Request[Job]) {
		mu.Lock()
		runs[r.Data.ID]++
		n := runs[r.Data.ID]
		mu.Unlock()
		switch {
		case r.Data.ID == "perm-1":
			r.Err = connect.Permanent(errors.New("no such account"))
		case r.Data.ID == "flaky-1":
			r.Err = fmt.Errorf("service unavailable, run %d", n)
		case r.Data.ID == "once-1" && n == 1:
			r.Err = errors.New("timeout")
		case r.Data.ID == "panic-1" && n == 1:
			panic("first run panics")
		}
	}
	src := newSource(addrs)
	src.MaxAttempts = 3
	stop := runSource(t, src, newPipelines(t, m))
	waitFor(t, 30*time.Second, "every record done", func() bool { return src.Stats().Done == uint64(len(jobs)) })
	waitFor(t, 10*time.Second, "every record committed", func() bool { return lag(t, adm) == 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	byValue := map[string]*kgo.Record{}
	for _, r := range readTopic(t, addrs, adm, jobsTopic) {
		byValue[string(r.Value)] = r
	}
	dead := map[string]*kgo.Record{}
	for _, r := range readTopic(t, addrs, adm, dlqTopic) {
		dead[string(r.Value)] = r
	}
	for _, tc := range []struct {
		id, kind, reason, delivered string
	}{
		{"bad-1", connect.KindDecode, `decode: cannot decode "bad-1"`, "1"},
		{"perm-1", connect.KindPermanent, "permanent: no such account", "1"},
		{"flaky-1", connect.KindExhausted, "service unavailable, run 3", "3"},
	} {
		d := dead[tc.id]
		if d == nil {
			t.Errorf("%s: no dead letter", tc.id)
			continue
		}
		orig := byValue[tc.id]
		for h, want := range map[string]string{
			connect.HeaderKind: tc.kind, connect.HeaderReason: tc.reason, connect.HeaderDelivered: tc.delivered,
			spk.HeaderTopic: jobsTopic, spk.HeaderPartition: strconv.Itoa(int(orig.Partition)), spk.HeaderOffset: strconv.FormatInt(orig.Offset, 10),
		} {
			if got := header(d, h); got != want {
				t.Errorf("%s: dead letter header %s = %q, want %q", tc.id, h, got, want)
			}
		}
	}
	if len(dead) != 3 {
		t.Errorf("%d dead letters, want 3", len(dead))
	}
	wantEveryResult(t, results(t, addrs, adm), append([]string{"once-1", "panic-1"}, good...), 1)
	st := src.Stats()
	t.Logf("stats: %+v", st)
	if st.DeadLettered != 3 || st.DecodeFailed != 1 || st.Retried != 4 {
		t.Errorf("stats: %d dead-lettered, %d decode failures, %d retried; want 3, 1 and 4 (flaky twice, once, panic)", st.DeadLettered, st.DecodeFailed, st.Retried)
	}
	mu.Lock()
	defer mu.Unlock()
	if runs["flaky-1"] != 3 || runs["perm-1"] != 1 || runs["once-1"] != 2 {
		t.Errorf("runs: %v; want flaky-1 3 (MaxAttempts), perm-1 1, once-1 2", runs)
	}
}

// A Source without a dead-letter topic still commits what failed for
// good, and logs it; nothing is left as lag.
func TestNoDeadLetterTopicCommitsFailures(t *testing.T) {
	addrs, adm := newCluster(t, 1)
	jobs := append([]string{"bad-1", "bad-2"}, ids("ok", 20)...)
	produceJobs(t, addrs, jobs, nil)
	src := newSource(addrs)
	src.DeadLetter = ""
	runToEnd(t, adm, src, newPipelines(t, newMachine("w", 10, 0)), len(jobs))
	if st := src.Stats(); st.DeadLettered != 2 || st.Done != uint64(len(jobs)) {
		t.Errorf("stats %+v: want 2 dead-lettered of %d done", st, len(jobs))
	}
}

// Cancelling Run's context drains: the records inside get DrainTimeout,
// the one that does not finish is left uncommitted, and Run returns nil.
func TestDrainLeavesUnfinishedRecordsUncommitted(t *testing.T) {
	addrs, adm := newCluster(t, 1)
	jobs := ids("drain", 30)
	produceJobs(t, addrs, jobs, nil)
	m := newMachine("w", 10, 0)
	m.behave = func(r *statepipe.Request[Job]) {
		if spk.Record(r.Ctx).Offset == 10 {
			<-r.Ctx.Done() // stuck until the drain's deadline cancels it
			r.Err = r.Ctx.Err()
		}
	}
	src := newSource(addrs)
	src.DrainTimeout = 200 * time.Millisecond
	stop := runSource(t, src, newPipelines(t, m))
	waitFor(t, 30*time.Second, "all but one record done", func() bool { return src.Stats().Done == uint64(len(jobs)-1) })
	if err := stop(); err != nil {
		t.Fatalf("Run after the drain: %v", err)
	}
	if got := committed(t, adm)[0]; got != 10 {
		t.Errorf("committed %d after the drain, want 10: the offset of the record that did not finish", got)
	}
	if st := src.Stats(); st.Released != 1 || st.Held != 0 {
		t.Errorf("stats %+v: want 1 released, nothing held", st)
	}
}

// The Source holds at most MaxInFlight records, and pauses the partitions
// that hold MaxPartitionInFlight while the others go on.
func TestBackpressurePausesFullPartitions(t *testing.T) {
	addrs, adm := newCluster(t, 4)
	jobs := ids("bp", 400)
	produceJobs(t, addrs, jobs, nil)
	release := make(chan struct{})
	m := newMachine("w", 4, 0)
	m.behave = func(r *statepipe.Request[Job]) {
		if spk.Record(r.Ctx).Partition == 0 {
			<-release // partition 0 is stuck
		}
	}
	src := newSource(addrs)
	src.MaxInFlight = 16
	src.MaxPartitionInFlight = 4
	// The stuck requests hold workers: leave enough for the others.
	stop := runSource(t, src, newPipelines(t, m, statepipe.WithPipelines(8)))
	var maxHeld int
	waitFor(t, 30*time.Second, "the other partitions done", func() bool {
		st := src.Stats()
		maxHeld = max(maxHeld, st.Held)
		return st.Done == 300
	})
	st := src.Stats()
	if st.Paused == 0 {
		t.Error("no partition paused")
	}
	for _, p := range st.Partitions {
		if p.Name == jobsTopic+"/0" && (p.Held < 4 || p.Held > 16) {
			t.Errorf("stuck partition holds %d, want between MaxPartitionInFlight and MaxInFlight", p.Held)
		}
	}
	close(release)
	waitFor(t, 30*time.Second, "everything done", func() bool {
		st := src.Stats()
		maxHeld = max(maxHeld, st.Held)
		return st.Done == 400
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if maxHeld > 16 {
		t.Errorf("held %d records at once, MaxInFlight is 16", maxHeld)
	}
	if l := lag(t, adm); l != 0 {
		t.Errorf("lag %d, want 0", l)
	}
	t.Logf("stats: %+v; most held at once: %d", src.Stats(), maxHeld)
}

// orderLog notes, per lane, the offsets in the order Start saw them.
type orderLog struct {
	mu    sync.Mutex
	lanes map[string][]int64
}

func (o *orderLog) note(lane string, offset int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.lanes == nil {
		o.lanes = map[string][]int64{}
	}
	o.lanes[lane] = append(o.lanes[lane], offset)
}

// increasing reports the first lane whose offsets go back, if any.
func (o *orderLog) increasing() (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for lane, offs := range o.lanes {
		for i := 1; i < len(offs); i++ {
			if offs[i] <= offs[i-1] {
				return fmt.Sprintf("%s: %v", lane, offs), false
			}
		}
	}
	return "", true
}

func TestOrderedSourcesRunEachLaneInOffsetOrder(t *testing.T) {
	for _, tc := range []struct {
		order   spk.Order
		maxPeak int // most requests inside at once: one per lane
	}{
		{spk.PartitionOrder, 3},
		{spk.KeyOrder, 3 * 5},
	} {
		t.Run(tc.order.String(), func(t *testing.T) {
			addrs, adm := newCluster(t, 3)
			jobs := ids("ord", 300)
			produceJobs(t, addrs, jobs, func(i int) string { return "k" + strconv.Itoa(i%5) })
			var log orderLog
			m := newMachine("w", 8, time.Millisecond)
			var mu sync.Mutex
			failed := map[string]bool{}
			m.behave = func(r *statepipe.Request[Job]) {
				rec := spk.Record(r.Ctx)
				lane := fmt.Sprint(rec.Partition)
				if tc.order == spk.KeyOrder {
					lane += "/" + string(rec.Key)
				}
				mu.Lock()
				first := !failed[r.Data.ID]
				failed[r.Data.ID] = true
				mu.Unlock()
				if first && rec.Offset%17 == 0 {
					r.Err = errors.New("fails once") // its retry comes before the next record of its lane
					return
				}
				log.note(lane, rec.Offset)
			}
			src := newSource(addrs)
			src.Order = tc.order
			runToEnd(t, adm, src, newPipelines(t, m), len(jobs))
			if lane, ok := log.increasing(); !ok {
				t.Errorf("out of order: %s", lane)
			}
			m.mu.Lock()
			peak := m.peak
			m.mu.Unlock()
			if peak > tc.maxPeak {
				t.Errorf("%d requests inside at once, want at most %d (one per lane)", peak, tc.maxPeak)
			}
			if peak < 2 {
				t.Errorf("peak %d: the lanes did not run in parallel", peak)
			}
			wantEveryResult(t, results(t, addrs, adm), jobs, 1)
			t.Logf("peak %d inside at once; stats %+v", peak, src.Stats())
		})
	}
}

// The two retry layers combine: a stage's in-process retries
// (statepipe.Retry under WithRetry) run out into a *statepipe.RetryError,
// which the Source runs again as a whole, up to MaxAttempts, and then
// dead-letters as exhausted.
func TestCoreRetriesRunOutIntoSourceRetries(t *testing.T) {
	addrs, adm := newCluster(t, 1)
	jobs := append([]string{"down-1"}, ids("ok", 10)...)
	produceJobs(t, addrs, jobs, nil)
	m := newMachine("w", 10, 0)
	var mu sync.Mutex
	runs := 0
	m.behave = func(r *statepipe.Request[Job]) {
		if r.Data.ID == "down-1" {
			mu.Lock()
			runs++
			mu.Unlock()
			r.Err = statepipe.Retry(errors.New("service down"))
		}
	}
	src := newSource(addrs)
	src.MaxAttempts = 3
	p := newPipelines(t, m, statepipe.WithRetry(statepipe.Backoff{Attempts: 2, Initial: time.Millisecond}))
	runToEnd(t, adm, src, p, len(jobs))
	dead := readTopic(t, addrs, adm, dlqTopic)
	if len(dead) != 1 || header(dead[0], connect.HeaderKind) != connect.KindExhausted || header(dead[0], connect.HeaderDelivered) != "3" {
		t.Fatalf("dead letters %v: want down-1 once, exhausted after 3 deliveries", dead)
	}
	if reason := header(dead[0], connect.HeaderReason); !strings.Contains(reason, "service down") {
		t.Errorf("reason %q does not say why", reason)
	}
	mu.Lock()
	defer mu.Unlock()
	if runs != 2*3 {
		t.Errorf("the stage ran %d times, want 2 in-process attempts x 3 deliveries", runs)
	}
}

// With statepipe.WithKey on the Pipelines, an Unordered Source keeps
// per-key order within a partition: it submits each partition's records
// in offset order, and the core runs equal keys one after another.
func TestWithKeyKeepsPerKeyOrderOfAnUnorderedSource(t *testing.T) {
	addrs, adm := newCluster(t, 2)
	keyOf := func(i int) string { return "k" + strconv.Itoa(i%4) }
	var jobs []string
	for i := range 300 {
		jobs = append(jobs, fmt.Sprintf("%s-%05d", keyOf(i), i))
	}
	produceJobs(t, addrs, jobs, keyOf)
	var log orderLog
	m := newMachine("w", 8, time.Millisecond)
	m.behave = func(r *statepipe.Request[Job]) {
		rec := spk.Record(r.Ctx)
		log.note(fmt.Sprintf("%d/%s", rec.Partition, rec.Key), rec.Offset)
	}
	p := newPipelines(t, m, statepipe.WithPipelines(4), statepipe.WithKey(func(j Job) string { return j.ID[:2] }))
	runToEnd(t, adm, newSource(addrs), p, len(jobs))
	if lane, ok := log.increasing(); !ok {
		t.Errorf("out of order: %s", lane)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.peak < 2 || m.peak > 4 {
		t.Errorf("%d requests inside at once, want 2 to 4 (one per key)", m.peak)
	}
}

// A partition whose head is stuck in an ordered Source queues records
// behind it until the process is full; once it is slow, the Source gives
// the queued ones back and pauses it, and the other partitions go on.
// MaxPartitionInFlight is unset: this is the default protection.
func TestStuckOrderedPartitionGivesBackItsQueue(t *testing.T) {
	addrs, adm := newCluster(t, 4)
	jobs := ids("stuck", 400)
	produceJobs(t, addrs, jobs, nil)
	release := make(chan struct{})
	m := newMachine("w", 4, 0)
	m.behave = func(r *statepipe.Request[Job]) {
		if rec := spk.Record(r.Ctx); rec.Partition == 0 && rec.Offset == 0 {
			<-release
		}
	}
	src := newSource(addrs)
	src.Order = spk.PartitionOrder
	src.MaxInFlight = 16
	stop := runSource(t, src, newPipelines(t, m))
	waitFor(t, 30*time.Second, "the other partitions done", func() bool { return src.Stats().Done == 300 })
	st := src.Stats()
	if st.GivenBack == 0 || st.Paused == 0 {
		t.Errorf("stats %+v: want the stuck partition's queue given back and the partition paused", st)
	}
	close(release)
	waitFor(t, 30*time.Second, "everything committed", func() bool { return src.Stats().Done == 400 && lag(t, adm) == 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	wantEveryResult(t, results(t, addrs, adm), jobs, 1)
	t.Logf("stats: %+v", src.Stats())
}

// A dead letter the brokers refuse is produced again after a backoff, and
// its record is not committed until it is stored: a record is never
// committed without a trace.
func TestRefusedDeadLetterIsRetriedBeforeTheCommit(t *testing.T) {
	c, addrs, adm := newClusterC(t, 1)
	jobs := append(ids("ok", 5), "bad-1")
	produceJobs(t, addrs, jobs, nil)
	gate := refuseProduces(c)
	src := newSource(addrs)
	src.Sink = nil
	src.Backoff = func(int) time.Duration { return 20 * time.Millisecond }
	stop := runSource(t, src, newPipelines(t, newMachine("w", 10, 0)))
	waitFor(t, 30*time.Second, "the dead letter refused twice", func() bool { return gate.refused() >= 2 })
	time.Sleep(4 * 50 * time.Millisecond) // commit intervals
	if got := committed(t, adm)[0]; got != 5 {
		t.Errorf("committed %d while the dead letter of offset 5 was refused; want 5", got)
	}
	if st := src.Stats(); st.Held != 1 || st.DeadLettered != 0 {
		t.Errorf("stats %+v: want the record held, nothing dead-lettered yet", st)
	}
	gate.open()
	waitFor(t, 30*time.Second, "everything committed", func() bool { return lag(t, adm) == 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	dead := readTopic(t, addrs, adm, dlqTopic)
	if len(dead) != 1 || string(dead[0].Value) != "bad-1" {
		t.Fatalf("dead letters %v, want bad-1 once", dead)
	}
	if st := src.Stats(); st.DeadLettered != 1 {
		t.Errorf("stats %+v: want 1 dead-lettered", st)
	}
}

// produceGate refuses every produce request the cluster gets, with
// TOPIC_AUTHORIZATION_FAILED (which the client does not retry), until it
// is opened.
type produceGate struct {
	mu      sync.Mutex
	closed  bool
	refusal int
}

func refuseProduces(c *kfake.Cluster) *produceGate {
	g := &produceGate{closed: true}
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		g.mu.Lock()
		defer g.mu.Unlock()
		if !g.closed {
			return nil, nil, false
		}
		g.refusal++
		pr := req.(*kmsg.ProduceRequest)
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range pr.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID // by name, or by ID in newer versions
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	return g
}

func (g *produceGate) refused() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.refusal
}

func (g *produceGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = false
}

// A result the brokers refuse fails its record like a retryable error:
// the record runs again, and is committed only once its result is stored.
func TestRefusedResultRunsTheRecordAgain(t *testing.T) {
	c, addrs, adm := newClusterC(t, 1)
	jobs := ids("res", 3)
	produceJobs(t, addrs, jobs, nil)
	gate := refuseProduces(c)
	src := newSource(addrs)
	src.MaxAttempts = 100
	src.Backoff = func(int) time.Duration { return 20 * time.Millisecond }
	stop := runSource(t, src, newPipelines(t, newMachine("w", 10, 0)))
	waitFor(t, 30*time.Second, "results refused", func() bool { return src.Stats().Retried >= 3 })
	time.Sleep(4 * 50 * time.Millisecond) // commit intervals
	if got, ok := committed(t, adm)[0]; ok && got > 0 {
		t.Errorf("committed %d with every result refused", got)
	}
	gate.open()
	waitFor(t, 30*time.Second, "everything committed", func() bool { return lag(t, adm) == 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	got := wantEveryResult(t, results(t, addrs, adm), jobs, 1)
	t.Logf("results %v after %d refused produces; stats %+v", got, gate.refused(), src.Stats())
}
