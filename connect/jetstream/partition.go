package jetstream

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Partitions describe a stream whose messages are spread over a fixed
// number of partitions by subject, for per-key order across processes:
// publish every message of one key (an account, a device) to the same
// partition, Subject with the key's partition number, such as
// orders.<hash(key) % Count>.
//
// Each partition has a consumer of its own (made or updated by Run from
// Consumer: named Durable-<n>, filtered on its subject, with the pinned
// client priority policy), and one process at a time reads it. The
// processes that run a Source with the same Partitions agree on who owns
// which partition through a key-value bucket, Members: each one renews
// its key there every Heartbeat, and a partition belongs to the member
// that ranks first for it (rendezvous hashing), so that a process that
// joins takes a fair share and a process that leaves or dies (its key
// expires) gives its share to the others, and no other partition moves.
// The server's pin keeps a partition with one process while they
// disagree: a process giving a partition up settles the messages it
// holds of it, then unpins it; a process that dies keeps it until
// PinnedTTL has passed without its pulls.

// Order. A partition's messages enter the pipeline in stream order, and
// are acked (or naked, or termed) in that order too, so that the
// partition's ack floor is always the first message its owner has not
// finished. A process that takes a partition over, from a process that
// handed it over or from one that died with messages of it, rewinds the
// partition's consumer to that ack floor (a consumer reset, nats-server
// 2.14 and later) and so gets, in stream order, everything its previous
// owner did not finish, before anything after it: side effects of those
// are replayed in order (at least once), none is skipped. A process
// keeps its pin by pulling four times per PinnedTTL at least, even
// without room for more messages. Several messages of a partition may be
// in flight at once (up to the consumer's MaxAckPending): give the
// Pipelines statepipe.WithKey with the same key, so that the side effects
// of one key run one after another, in order, while different keys run in
// parallel. A message that fails for now is delivered again after the
// ones behind it; retry inside the pipeline (statepipe.Retry) where the
// order of one key's attempts matters. A rewind starts the delivery
// counts again: a message that makes every process that takes it die is
// not stopped by MaxDeliver.
type Partitions struct {
	// Stream is the partitioned stream; required.
	Stream string
	// Subject is the subjects of the partitions, with one %d for the
	// partition's number, from 0 to Count-1; required.
	Subject string
	// Count is the number of partitions; required. It cannot change
	// while the stream has messages: a key would move to another
	// partition.
	Count int
	// Consumer is the template of the partitions' consumers; Durable is
	// required and names them. AckPolicy must be explicit (the zero
	// value). PinnedTTL, how soon a dead process's partitions pass to
	// the others, defaults to five heartbeats; a partition's process
	// pulls four times per PinnedTTL at least, to keep its pin. MaxAckPending bounds each partition's
	// messages in flight.
	Consumer jetstream.ConsumerConfig
	// Members is the bucket where the processes meet; required, with a
	// TTL: how soon a process that died is taken for gone, such as
	// js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "members",
	// TTL: 3 * time.Second}). Several Partitions may share a bucket,
	// under different Consumer.Durable names.
	Members jetstream.KeyValue
	// Member names this process among the members, unique among them.
	// Default: the host name, the process ID and a random suffix.
	Member string
	// Heartbeat is how often a process renews its membership and reads
	// the others'; shorter than the bucket's TTL. Default: a third of
	// the TTL.
	Heartbeat time.Duration
}

// priorityGroup is the priority group of the partitions' consumers.
const priorityGroup = "owner"

var validName = regexp.MustCompile(`^[-_a-zA-Z0-9]+$`)

func (p *Partitions) validate() error {
	var problems []string
	if p.Stream == "" {
		problems = append(problems, "Partitions.Stream is empty")
	}
	if strings.Count(p.Subject, "%d") != 1 || !validSubject(fmt.Sprintf(p.Subject, 0)) {
		problems = append(problems, fmt.Sprintf("Partitions.Subject %q is not a subject with one %%d", p.Subject))
	}
	if p.Count < 1 {
		problems = append(problems, "Partitions.Count must be at least 1")
	}
	if !validName.MatchString(p.Consumer.Durable) {
		problems = append(problems, fmt.Sprintf("Partitions.Consumer.Durable %q is not a consumer name", p.Consumer.Durable))
	}
	if p.Consumer.PinnedTTL < 0 {
		problems = append(problems, "Partitions.Consumer.PinnedTTL must not be negative")
	}
	if p.Members == nil {
		problems = append(problems, "nil Partitions.Members")
	}
	if p.Member != "" && !validName.MatchString(p.Member) {
		problems = append(problems, fmt.Sprintf("Partitions.Member %q is not a name of letters, digits, - and _", p.Member))
	}
	if p.Heartbeat < 0 {
		problems = append(problems, "Partitions.Heartbeat must not be negative")
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// consumerConfig is partition n's consumer.
func (p *Partitions) consumerConfig(n int, heartbeat time.Duration) jetstream.ConsumerConfig {
	cfg := p.Consumer
	cfg.Durable = p.Consumer.Durable + "-" + strconv.Itoa(n)
	cfg.Name = ""
	cfg.FilterSubject = fmt.Sprintf(p.Subject, n)
	cfg.FilterSubjects = nil
	cfg.PriorityPolicy = jetstream.PriorityPolicyPinned
	cfg.PriorityGroups = []string{priorityGroup}
	if cfg.PinnedTTL == 0 {
		cfg.PinnedTTL = 5 * heartbeat
	}
	return cfg
}

// owns reports whether consumer is one of the partitions'.
func (p *Partitions) owns(consumer string) bool {
	n, ok := strings.CutPrefix(consumer, p.Consumer.Durable+"-")
	if !ok {
		return false
	}
	i, err := strconv.Atoi(n)
	return err == nil && i >= 0 && i < p.Count
}

// heartbeat is how often members renew their keys, in a bucket with
// keys that live for ttl.
func (p *Partitions) heartbeat(ttl time.Duration) time.Duration {
	if p.Heartbeat > 0 {
		return p.Heartbeat
	}
	return max(ttl/3, time.Millisecond)
}

func defaultMember() string {
	host, _ := os.Hostname()
	host = regexp.MustCompile(`[^-_a-zA-Z0-9]`).ReplaceAllString(host, "_")
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), nuid.Next()[16:])
}

// owner returns the member that ranks first for partition n.
func owner(members []string, n int) string {
	var best string
	var top uint64
	pn := mix(uint64(n) + 1)
	for _, m := range members {
		h := fnv.New64a()
		h.Write([]byte(m))
		// FNV alone ranks short names that differ in one byte the same
		// way for every partition; the finalizer spreads them.
		if s := mix(h.Sum64() ^ pn); best == "" || s > top || s == top && m < best {
			best, top = m, s
		}
	}
	return best
}

// mix is SplitMix64's finalizer.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// partitions are a run's partitioned consumers.
type partitions struct {
	consumers []jetstream.Consumer
	pullEvery []time.Duration // each consumer's lane's
	heartbeat time.Duration
	member    string
}

// resolvePartitions makes or updates the partitions' consumers.
func (r *run[T]) resolvePartitions(ctx context.Context, p *Partitions) error {
	st, err := p.Members.Status(ctx)
	if err != nil {
		return fmt.Errorf("statepipe/jetstream: the members bucket: %w", err)
	}
	hb := p.heartbeat(st.TTL())
	switch {
	case st.TTL() <= 0:
		return invalid("the members bucket %s has no TTL: a process that died would keep its partitions for good", st.Bucket())
	case hb >= st.TTL():
		return invalid("Partitions.Heartbeat %v is not shorter than the members bucket's TTL %v: members would expire between heartbeats", hb, st.TTL())
	}
	member := p.Member
	if member == "" {
		member = defaultMember()
	}
	r.parts = &partitions{heartbeat: hb, member: member}
	for n := range p.Count {
		c, err := r.src.JetStream.CreateOrUpdateConsumer(ctx, p.Stream, p.consumerConfig(n, hb))
		if err != nil {
			return fmt.Errorf("statepipe/jetstream: the consumer of partition %d: %w", n, err)
		}
		r.parts.consumers = append(r.parts.consumers, c)
		// Pull four times per PinnedTTL at least, to keep the pin.
		every := c.CachedInfo().Config.PinnedTTL / 4
		r.parts.pullEvery = append(r.parts.pullEvery, min(max(every, time.Millisecond), r.c.fetchWait))
	}
	return nil
}

// partitioned runs the partitions' fetchers: every heartbeat it renews
// this member's key, reads the members, and starts the fetchers of the
// partitions it gained and stops those of the partitions it lost. It
// returns once stop has ended and every fetcher has, the partitions
// handed over.
func (r *run[T]) partitioned(p *Partitions) {
	pt := r.parts
	key := p.Consumer.Durable + "." + pt.member
	lanes := make([]*lane, p.Count)
	var wg sync.WaitGroup
	defer func() {
		for _, l := range lanes {
			if l != nil {
				l.stopLane()
			}
		}
		// Let the others take over now rather than at the key's TTL.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.stop), r.c.pubTimeout)
		if err := p.Members.Delete(ctx, key); err != nil {
			r.c.log.Warn("statepipe/jetstream: leaving the members", "key", key, "err", err)
		}
		cancel()
		wg.Wait()
		r.src.lanes.Store(&laneSet{partitioned: true}) // it owns none now
	}()
	tick := time.NewTicker(pt.heartbeat)
	defer tick.Stop()
	for {
		members, err := r.members(p, key)
		if err != nil {
			r.c.log.Warn("statepipe/jetstream: reading the members; keeping the partitions as they are", "err", err)
		} else {
			for n := range lanes {
				mine := owner(members, n) == pt.member
				switch {
				case mine && lanes[n] == nil:
					l := newLane(r.stop, fmt.Sprintf(p.Subject, n), pt.consumers[n], priorityGroup, true)
					l.pullEvery, l.takeover = pt.pullEvery[n], true
					lanes[n] = l
					wg.Go(func() { r.fetch(l); r.handOver(l) })
				case !mine && lanes[n] != nil:
					lanes[n].stopLane()
					lanes[n] = nil
				}
			}
			set := &laneSet{partitioned: true}
			for _, l := range lanes {
				if l != nil {
					set.lanes = append(set.lanes, l)
				}
			}
			r.owned.Store(int64(len(set.lanes)))
			r.src.lanes.Store(set)
		}
		select {
		case <-tick.C:
		case <-r.stop.Done():
			return
		}
	}
}

// members renews this member's key and returns the members, sorted.
func (r *run[T]) members(p *Partitions, key string) ([]string, error) {
	ctx, cancel := context.WithTimeout(r.stop, r.c.pubTimeout)
	defer cancel()
	if _, err := p.Members.Put(ctx, key, nil); err != nil {
		return nil, err
	}
	lister, err := p.Members.ListKeysFiltered(ctx, p.Consumer.Durable+".*")
	if err != nil {
		return nil, err
	}
	var members []string
	for k := range lister.Keys() {
		members = append(members, strings.TrimPrefix(k, p.Consumer.Durable+"."))
	}
	_ = lister.Stop() // ended by itself already, after the last key
	return members, nil
}

// handOver waits, after a lane's fetcher stopped, until every message it
// held is settled, then unpins its consumer so that its next owner gets it
// at once. At the drain's deadline it gives up: the pin then passes after
// PinnedTTL.
func (r *run[T]) handOver(l *lane) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	pulled := time.Now()
	for l.held.Load() > 0 {
		select {
		case <-tick.C:
		case <-r.work.Done():
			return
		}
		if time.Since(pulled) >= l.pullEvery {
			r.keepPin(l) // the pin must not pass before the last message is settled
			pulled = time.Now()
		}
	}
	ctx, cancel := context.WithTimeout(r.work, r.c.pubTimeout)
	defer cancel()
	// The next owner rewinds the partition to its ack floor: wait, a
	// little, for the server to have applied the last acks (it applies
	// them on its own time), or it processes those messages again. A
	// retried message below them holds the floor back: then the wait
	// ends at its bound, and they are processed again, in order.
	if last := l.lastAcked.Load(); last > 0 {
		applied, stop := context.WithTimeout(ctx, time.Second)
		for applied.Err() == nil {
			if info, err := l.cons.Info(applied); err == nil && info.AckFloor.Stream >= last {
				break
			}
			select {
			case <-tick.C:
			case <-applied.Done():
			}
		}
		stop()
	}
	// Unpin only the pin this lane had: it may have passed to the next
	// owner already, or to a newer lane of this process.
	id := l.pinID.Load()
	info, err := l.cons.Info(ctx)
	if err != nil || id == nil || len(info.PriorityGroups) == 0 || info.PriorityGroups[0].PinnedClientID != *id {
		return
	}
	if err := r.stream.UnpinConsumer(ctx, l.cons.CachedInfo().Name, priorityGroup); err != nil {
		r.c.log.Debug("statepipe/jetstream: unpinning a partition given up", "partition", l.name, "err", err)
	}
}
