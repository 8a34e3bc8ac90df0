package jetstream_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/statepipe/statepipe"
	spjs "github.com/statepipe/statepipe/connect/jetstream"
)

// keyOf is a partitioned job's key: its ID is "key/seq".
func keyOf(j Job) string { k, _, _ := strings.Cut(j.ID, "/"); return k }

// sideEffects records, per key, the sequence numbers in the order a
// stage saw them, across processes.
type sideEffects struct {
	mu    sync.Mutex
	log   map[string][]int
	trace map[string][]string // who saw it, at which delivery, for the failure message
}

func (s *sideEffects) record(id, who string, delivered uint64) {
	k, n, _ := strings.Cut(id, "/")
	seq, _ := strconv.Atoi(n)
	s.mu.Lock()
	s.log[k] = append(s.log[k], seq)
	s.trace[k] = append(s.trace[k], fmt.Sprintf("%d:%s#%d@%s", seq, who, delivered, time.Now().Format("05.000")))
	s.mu.Unlock()
}

// check returns, per key, how far it got, and fails the test if a key
// ever saw a message before every earlier one of its key: replays (a
// suffix seen again after a process died) are allowed, skips are not.
func (s *sideEffects) check() (done map[string]int, replays int, bad []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	done = map[string]int{}
	for k, seqs := range s.log {
		top := -1
		for _, v := range seqs {
			switch {
			case v == top+1:
				top = v
			case v <= top:
				replays++
			default:
				if len(bad) < 3 {
					bad = append(bad, fmt.Sprintf("key %s out of order: %v", k, s.trace[k]))
				}
				top = max(top, v)
			}
		}
		done[k] = top
	}
	return done, replays, bad
}

// Finding 7 of issue 13: with MaxAckPending above 1 per-key order broke
// (an ordered group orders output, not side effects), and with pinned
// partitions the first process took every partition. Here three
// processes share 8 partitions as they join, one leaves with a drain and
// one dies with its messages; each key's side effects stay in order, with
// several messages of a partition in flight.
func TestPartitionsSpreadAndKeepKeyOrder(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: "PARTS", Subjects: []string{"parts.*"},
		Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "members", TTL: 1500 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	const parts, keys, perKey = 8, 24, 20
	partOf := func(key string) int { h := fnv.New32a(); h.Write([]byte(key)); return int(h.Sum32() % parts) }
	publishKeys := func(from, to int) {
		for seq := from; seq < to; seq++ {
			for k := range keys {
				key := fmt.Sprintf("k%02d", k)
				if _, err := e.js.PublishAsync(fmt.Sprintf("parts.%d", partOf(key)), fmt.Appendf(nil, "%s/%d", key, seq)); err != nil {
					t.Fatal(err)
				}
			}
		}
		select {
		case <-e.js.PublishAsyncComplete():
		case <-time.After(10 * time.Second):
			t.Fatal("publishing timed out")
		}
	}
	effects := &sideEffects{log: map[string][]int{}, trace: map[string][]string{}}

	type proc struct {
		src  *spjs.Source[Job]
		stop func() error
		kill func()
	}
	start := func(name string) *proc {
		nc, js := connect(t, e.url)
		kv, err := js.KeyValue(ctx, "members")
		if err != nil {
			t.Fatal(err)
		}
		var dead atomic.Bool
		m := newMachine(8, 50*time.Millisecond)
		m.behave = func(r *statepipe.Request[Job]) {
			if dead.Load() { // a dead process has no side effects
				r.Err = errors.New("dead")
				return
			}
			effects.record(r.Data.ID, name, r.Data.Delivered)
		}
		p := newPipelines(t, m, statepipe.WithKey(keyOf))
		src := &spjs.Source[Job]{JetStream: js, Decode: decodeJob, FetchWait: 100 * time.Millisecond, MaxInFlight: 64,
			Backoff: func(uint64) time.Duration { return 10 * time.Millisecond },
			Partitions: &spjs.Partitions{Stream: "PARTS", Subject: "parts.%d", Count: parts, Members: kv, Member: name,
				Heartbeat: 200 * time.Millisecond,
				Consumer:  jetstream.ConsumerConfig{Durable: "ordered", AckWait: 5 * time.Second, MaxDeliver: 20, MaxAckPending: 16}}}
		return &proc{src: src, stop: runSource(t, src, p), kill: func() { nc.Close(); dead.Store(true) }}
	}
	owned := func(ps ...*proc) (each []int, total int) {
		seen := map[string]bool{}
		for _, p := range ps {
			s := p.src.Stats()
			each = append(each, len(s.Partitions))
			for _, ps := range s.Partitions {
				if seen[ps.Name] {
					return nil, -1 // two owners for now: wait
				}
				seen[ps.Name] = true
			}
		}
		return each, len(seen)
	}

	a := start("a")
	t0 := time.Now()
	waitFor(t, 10*time.Second, "a to own every partition", func() bool {
		_, n := owned(a)
		if time.Since(t0) > time.Second && !a.src.Running() {
			t.Fatalf("a: %v", a.stop())
		}
		return n == parts
	})
	publishKeys(0, 5)
	b := start("b")
	c := start("c")
	waitFor(t, 10*time.Second, "the partitions spread over three", func() bool {
		each, n := owned(a, b, c)
		return n == parts && each[0] > 0 && each[1] > 0 && each[2] > 0
	})
	each, _ := owned(a, b, c)
	t.Logf("partitions owned by a, b, c: %v", each)
	publishKeys(5, 12)
	time.Sleep(300 * time.Millisecond)

	if err := b.stop(); err != nil { // leaves with a drain
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "b's partitions to move", func() bool { _, n := owned(a, c); return n == parts })
	publishKeys(12, perKey)
	waitFor(t, 10*time.Second, "c to hold messages", func() bool { return c.src.Stats().Held > 4 })
	killed := c.src.Stats()
	c.kill() // dies with what it holds: no more side effects, no acks, its key expires
	waitFor(t, 30*time.Second, "every key done", func() bool {
		done, _, bad := effects.check()
		if len(bad) > 0 {
			t.Fatalf("%s", strings.Join(bad, "\n"))
		}
		if len(done) < keys {
			return false
		}
		for _, top := range done {
			if top != perKey-1 {
				return false
			}
		}
		return true
	})
	_, replays, _ := effects.check()
	if replays == 0 {
		t.Errorf("nothing replayed after c died holding %d messages", killed.Held)
	}
	waitFor(t, 10*time.Second, "a to own every partition again, with nothing left in them", func() bool {
		s := a.src.Stats()
		for _, ps := range s.Partitions {
			if ps.Lag != 0 || ps.Held != 0 {
				return false
			}
		}
		return len(s.Partitions) == parts
	})
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d messages over %d keys in order; %d replayed after the kill; a: %+v", keys*perKey, keys, replays, a.src.Stats())
	if s := a.src.Stats(); s.Held != 0 || len(s.Partitions) != 0 || s.Lag != -1 {
		t.Errorf("a after its drain: %+v; want nothing held or owned", s)
	}
}

// Bad Partitions fail Run at once, naming the problem.
func TestInvalidPartitions(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: "PARTS", Subjects: []string{"parts.*"}}); err != nil {
		t.Fatal(err)
	}
	forever, err := e.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "forever"})
	if err != nil {
		t.Fatal(err)
	}
	members, err := e.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "members", TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	good := func() *spjs.Partitions {
		return &spjs.Partitions{Stream: "PARTS", Subject: "parts.%d", Count: 4, Members: members,
			Consumer: jetstream.ConsumerConfig{Durable: "ordered"}}
	}
	cons := e.consumer(t, consumerConfig())
	p := newPipelines(t, newMachine(10, 0))
	for _, tt := range []struct {
		name   string
		change func(*spjs.Source[Job])
		want   string
	}{
		{"both", func(s *spjs.Source[Job]) { s.Consumer = cons }, "both Consumer and Partitions"},
		{"subject", func(s *spjs.Source[Job]) { s.Partitions.Subject = "parts.>" }, "not a subject with one %d"},
		{"count", func(s *spjs.Source[Job]) { s.Partitions.Count = 0 }, "Count must be at least 1"},
		{"durable", func(s *spjs.Source[Job]) { s.Partitions.Consumer.Durable = "a.b" }, "not a consumer name"},
		{"no bucket", func(s *spjs.Source[Job]) { s.Partitions.Members = nil }, "nil Partitions.Members"},
		{"no ttl", func(s *spjs.Source[Job]) { s.Partitions.Members = forever }, "has no TTL"},
		{"slow heartbeat", func(s *spjs.Source[Job]) { s.Partitions.Heartbeat = time.Second }, "not shorter than the members bucket's TTL"},
		{"no acks", func(s *spjs.Source[Job]) { s.Partitions.Consumer.AckPolicy = jetstream.AckNonePolicy }, "explicit acks"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := &spjs.Source[Job]{JetStream: e.js, Decode: decodeJob, Partitions: good()}
			tt.change(src)
			if err := src.Run(ctx, p); !errors.Is(err, statepipe.ErrInvalidOption) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run: %v, want ErrInvalidOption with %q", err, tt.want)
			}
		})
	}
}
