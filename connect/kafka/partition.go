package kafka

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// tp names a partition.
type tp struct {
	topic     string
	partition int32
}

func (t tp) String() string { return fmt.Sprintf("%s/%d", t.topic, t.partition) }

// stage is where a held record is.
type stage uint8

const (
	queued    stage = iota // waiting to be submitted: in the submit queue or behind its lane's head
	inPipe                 // submitted, not out yet
	producing              // out; its result or dead letter is being produced
	waiting                // waiting for a retry's backoff
	finished               // done: may be committed
	dropped                // given up unfinished: a lost partition, a drain's deadline
)

// delivery is one record held by a Source, from poll to commit.
type delivery struct {
	rec     *kgo.Record
	part    *partition
	lane    *lane // its ordering lane; nil when Unordered
	attempt int   // runs through the pipeline so far
	polled  time.Time
	behind  bool  // waiting in its lane's wait list; guarded by run.mu
	stage   stage // guarded by run.mu
	// producing is set while its result or dead letter is being
	// produced; guarded by run.mu.
	producing bool

	// Set while the delivery waits for a retry: what to do when due.
	deadKind   string // non-empty: produce a dead letter of this kind
	deadReason string
}

func (d *delivery) size() int64 { return int64(len(d.rec.Key) + len(d.rec.Value)) }

// lane is one queue of records that run one after another: a partition's
// (PartitionOrder) or a key's within a partition (KeyOrder).
type lane struct {
	key  string
	wait []*delivery // behind the head, in offset order
	busy bool        // its head is held and not finished
}

// partition is a partition this Source owns, for one assignment: from
// assign to revoke or loss. Guarded by run.mu.
type partition struct {
	tp     tp
	name   string
	ctx    context.Context // the requests' contexts derive from it
	cancel context.CancelFunc

	held       []*delivery // unfinished records and finished ones above them, in offset order
	bytes      int64
	unfinished int // held records not finished or dropped
	busy       int // held records in the pipeline or producing: what a revoke waits for

	next      kgo.EpochOffset // the offset to commit: below every unfinished record; Offset -1 if none yet
	committed int64           // the last offset committed; -1 if none by this Source
	hwm       int64           // high watermark from the last fetch; -1 if none yet

	lanes  map[string]*lane
	paused bool

	revoked bool          // taken away: no more records, no retries
	drained chan struct{} // closed once revoked and busy is 0
}

func newPartition(parent context.Context, t tp) *partition {
	ctx, cancel := context.WithCancel(parent)
	return &partition{
		tp: t, name: t.String(), ctx: ctx, cancel: cancel,
		next: kgo.EpochOffset{Epoch: -1, Offset: -1}, committed: -1, hwm: -1,
		lanes: map[string]*lane{}, drained: make(chan struct{}),
	}
}

// advance drops the finished records at the head of held and moves the
// commit point past them. It reports whether the commit point moved.
func (p *partition) advance() bool {
	n := 0
	for n < len(p.held) && p.held[n].stage == finished {
		r := p.held[n].rec
		p.next = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset + 1}
		n++
	}
	if n == 0 {
		return false
	}
	clear(p.held[:n])
	p.held = p.held[n:]
	return true
}

// oldest is when the oldest unfinished record held was polled; the zero
// time if there is none.
func (p *partition) oldest() time.Time {
	for _, d := range p.held {
		if d.stage != finished {
			return d.polled
		}
	}
	return time.Time{}
}

// lag is the records after the commit point, by the last fetch's high
// watermark; -1 if not known.
func (p *partition) lag() int64 {
	if p.hwm < 0 {
		return -1
	}
	next := p.next.Offset
	if len(p.held) > 0 {
		next = p.held[0].rec.Offset
	}
	if next < 0 {
		return -1
	}
	return max(0, p.hwm-next)
}

// pending reports whether the partition has an offset to commit.
func (p *partition) pending() bool { return p.next.Offset > p.committed }

// markDrained closes drained once the partition is revoked and nothing
// of it is in the pipeline or producing.
func (p *partition) markDrained() {
	if p.revoked && p.busy == 0 {
		select {
		case <-p.drained:
		default:
			close(p.drained)
		}
	}
}
