package kafka

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// assigned is the OnPartitionsAssigned callback: each partition starts a
// new ownership, at the group's committed offset.
func (r *run[T]) assigned(_ context.Context, cl *kgo.Client, as map[string][]int32) {
	r.clp.CompareAndSwap(nil, cl)
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for topic, ps := range as {
		for _, i := range ps {
			k := tp{topic, i}
			if old := r.parts[k]; old != nil {
				r.giveUp(old)
			}
			r.parts[k] = newPartition(r.work, k)
			n++
		}
	}
	r.src.counters.assigned.Add(uint64(n))
	// A pause is the client's and outlives an earlier ownership.
	r.cl().ResumeFetchPartitions(as)
	r.c.log.Info("statepipe/kafka: partitions assigned", "partitions", as)
}

// revoked is the OnPartitionsRevoked callback: the partitions stop taking
// records, their requests get RevokeTimeout to finish, what finished is
// committed, and the rest is given up uncommitted.
func (r *run[T]) revoked(ctx context.Context, cl *kgo.Client, rev map[string][]int32) {
	r.clp.CompareAndSwap(nil, cl)
	if r.sess != nil {
		r.lost(ctx, cl, rev) // the session aborts the transaction
		return
	}
	r.mu.Lock()
	var parts []*partition
	for topic, ps := range rev {
		for _, i := range ps {
			p := r.parts[tp{topic, i}]
			if p == nil {
				continue
			}
			p.revoked = true
			for _, d := range p.held {
				if d.stage == queued || d.stage == waiting {
					r.drop(d)
				}
			}
			p.markDrained()
			parts = append(parts, p)
		}
	}
	closing := r.closing
	r.mu.Unlock()
	if len(parts) == 0 {
		return
	}
	if !closing {
		t := time.NewTimer(r.c.revokeTimeout)
		defer t.Stop()
	wait:
		for _, p := range parts {
			select {
			case <-p.drained:
			case <-t.C:
				r.c.log.Warn("statepipe/kafka: revoked partitions' requests did not finish in time; leaving them uncommitted", "timeout", r.c.revokeTimeout)
				break wait
			case <-r.work.Done():
				break wait
			}
		}
	}
	r.commit(parts)
	r.mu.Lock()
	for _, p := range parts {
		r.giveUp(p)
	}
	r.mu.Unlock()
	r.src.counters.revoked.Add(uint64(len(parts)))
	r.c.log.Info("statepipe/kafka: partitions revoked", "partitions", rev)
}

// lost is the OnPartitionsLost callback: the member is out of the group,
// so nothing can be committed; the partitions are given up at once. In a
// transaction, a revoke is a loss too: the session aborts the transaction
// and all its records run again.
func (r *run[T]) lost(_ context.Context, cl *kgo.Client, lost map[string][]int32) {
	if cl != nil {
		r.clp.CompareAndSwap(nil, cl)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for topic, ps := range lost {
		for _, i := range ps {
			if p := r.parts[tp{topic, i}]; p != nil {
				r.giveUp(p)
				n++
			}
		}
	}
	r.src.counters.lost.Add(uint64(n))
	if n > 0 {
		r.c.log.Info("statepipe/kafka: partitions lost", "partitions", lost)
	}
}

// giveUp ends p's ownership: its requests are cancelled, and what is not
// finished is dropped, uncommitted. Called with r.mu held.
func (r *run[T]) giveUp(p *partition) {
	p.revoked = true
	p.cancel()
	for _, d := range p.held {
		r.drop(d)
	}
	if p.paused {
		p.paused = false
		r.cl().ResumeFetchPartitions(map[string][]int32{p.tp.topic: {p.tp.partition}})
	}
	if r.parts[p.tp] == p {
		delete(r.parts, p.tp)
	}
}

// commitEvery commits the finished offsets every CommitInterval until
// stop is closed.
func (r *run[T]) commitEvery(stop <-chan struct{}) {
	t := time.NewTicker(r.c.commitInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			r.commit(nil)
		case <-stop:
			return
		}
	}
}

// commitTimeout bounds one commit.
const commitTimeout = 10 * time.Second

// commit commits the finished offsets of parts, or with nil of every
// partition owned and not being revoked, where they moved since the last
// commit.
func (r *run[T]) commit(parts []*partition) {
	r.commitMu.Lock()
	defer r.commitMu.Unlock()
	r.mu.Lock()
	if parts == nil {
		for _, p := range r.parts {
			if !p.revoked {
				parts = append(parts, p)
			}
		}
	}
	offsets := map[string]map[int32]kgo.EpochOffset{}
	sent := map[tp]*partition{}
	at := map[tp]int64{}
	for _, p := range parts {
		if !p.pending() {
			continue
		}
		if offsets[p.tp.topic] == nil {
			offsets[p.tp.topic] = map[int32]kgo.EpochOffset{}
		}
		offsets[p.tp.topic][p.tp.partition] = p.next
		sent[p.tp] = p
		at[p.tp] = p.next.Offset
	}
	r.mu.Unlock()
	if len(sent) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	ok := map[tp]bool{}
	r.cl().CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			r.src.counters.commitFailed.Add(uint64(len(sent)))
			r.c.log.Warn("statepipe/kafka: commit failed", "err", err)
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					r.src.counters.commitFailed.Add(1)
					r.c.log.Warn("statepipe/kafka: commit failed", "topic", t.Topic, "partition", p.Partition, "err", err)
					continue
				}
				ok[tp{t.Topic, p.Partition}] = true
			}
		}
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, p := range sent {
		if ok[k] {
			p.committed = max(p.committed, at[k])
			r.src.counters.committed.Add(1)
		}
	}
}

// round is the transaction under way, with TransactionalID: the records
// of one poll, from Begin to End.
type round struct {
	open    bool
	dropped int   // records given up: the transaction must abort
	failed  error // a produce in it failed: the transaction must abort
}

// beginRound starts counting the records of a new transaction.
func (r *run[T]) beginRound() {
	r.mu.Lock()
	r.round = round{open: true}
	r.mu.Unlock()
}

// endRound waits until every record of the transaction is finished or
// dropped, then ends it: committed with the offsets of its records if all
// of them finished, aborted otherwise (and the client rewinds to the last
// committed offsets, so that they run again).
func (r *run[T]) endRound() {
	r.mu.Lock()
	for r.round.open && r.held > 0 {
		r.mu.Unlock()
		<-r.wakePoll
		r.mu.Lock()
	}
	rd := r.round
	r.round = round{}
	r.mu.Unlock()
	if !rd.open {
		return
	}
	try := rd.dropped == 0 && rd.failed == nil
	ctx, cancel := context.WithTimeout(context.Background(), 2*commitTimeout)
	defer cancel()
	committed, err := r.sess.End(ctx, kgo.TransactionEndTry(try))
	switch {
	case committed:
		r.src.counters.transactions.Add(1)
	default:
		r.src.counters.aborted.Add(1)
		r.c.log.Info("statepipe/kafka: transaction aborted; its records run again", "dropped", rd.dropped, "failed", rd.failed, "err", err)
		r.mu.Lock()
		for _, p := range r.parts {
			p.next = kgo.EpochOffset{Epoch: -1, Offset: -1}
		}
		r.mu.Unlock()
	}
}
