package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/statepipe/statepipe"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Run joins the consumer group and feeds the records of the partitions it
// is given into a new group of p until ctx ends; then it drains, commits
// what finished, leaves the group and returns nil. It returns an error at
// once, starting nothing, if a field is invalid (wrapping
// [statepipe.ErrInvalidOption]), the Source is already running
// ([ErrRunning]), the client cannot be made or a topic it needs does not
// exist ([ErrNoTopic]); and after a drain if the Pipelines were closed
// under it.
//
// Each record is decoded and submitted with a context that carries it
// ([Record], [Attempt]); the Source settles it when its request comes out
// of the group, by [connect.Judge]:
//
//   - Err nil: the Sink (if any) produces the result and Kafka
//     acknowledges it; then the record is finished.
//   - Err matching [connect.ErrPermanent], or a record Decode rejects:
//     the record is produced to DeadLetter with the reason in headers,
//     then finished.
//   - any other error (a [*statepipe.RetryError] or a
//     [*statepipe.PanicError] included): the record runs again after
//     Backoff, until MaxAttempts; the last failure is dead-lettered as
//     [connect.KindExhausted].
//
// Records finish in any order; per partition, the Source commits the
// offset after the last record below which all are finished, every
// CommitInterval, so a commit never passes a record still in the
// pipeline, parked in a batch, waiting for a retry or for the Sink.
//
// When a rebalance takes partitions away, the Source stops taking their
// records, drops those not yet submitted or waiting for a retry, lets
// those in the pipeline finish for up to RevokeTimeout, commits what
// finished and lets the rebalance go on; the requests still inside are
// cancelled and their records left uncommitted for the next owner. Lost
// partitions (the member was dropped from the group) are given up at once,
// without a commit. A partition it is given starts at the group's
// committed offset.
//
// When ctx ends, Run stops polling, drops the records not yet submitted
// or waiting for a retry, and lets those inside finish for up to
// DrainTimeout; then it cancels the rest, commits, and leaves the group.
// Run owns its goroutines (a poller, a submitter, a committer and its
// own) and all have ended when it returns; requests abandoned at the
// deadline may still come out of the group later, into nothing. p stays
// open: close it after Run returns.
func (s *Source[T]) Run(ctx context.Context, p *statepipe.Pipelines[T]) error {
	c, err := s.settings()
	if err != nil {
		return err
	}
	if p == nil {
		return invalid("nil Pipelines")
	}
	if !s.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer s.running.Store(false)

	stop, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	r := &run[T]{
		src: s, c: c, stop: stop, fail: fail, work: work,
		parts:      map[tp]*partition{},
		wakeSubmit: make(chan struct{}, 1),
		wakePoll:   make(chan struct{}, 1),
		wakeSettle: make(chan struct{}, 1),
	}
	if err := r.connect(ctx); err != nil {
		return err
	}
	r.g = p.NewGroup(statepipe.MaxInFlight(c.maxInFlight))
	s.mu.Lock()
	s.live = r
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.live = nil
		s.mu.Unlock()
	}()

	var wg sync.WaitGroup
	polling := make(chan struct{})
	wg.Go(func() {
		defer close(polling)
		r.poll()
	})
	wg.Go(r.submit)
	commitStop := make(chan struct{})
	if !c.transactional {
		wg.Go(func() { r.commitEvery(commitStop) })
	}
	r.settleResults(cancelWork)
	close(commitStop)
	<-polling // in a transaction, the poller ends it
	wg.Wait()
	r.closeClient()
	if err := context.Cause(stop); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// run is one Run of a Source.
type run[T any] struct {
	src *Source[T]
	c   settings
	// clp is the client: set once it is made, or by the first group
	// callback, which franz-go may call before NewClient has returned.
	clp  atomic.Pointer[kgo.Client]
	sess *kgo.GroupTransactSession // with TransactionalID
	g    *statepipe.Group[T]
	stop context.Context // ends when polling must stop: Run's ctx, or a fatal error
	fail context.CancelCauseFunc
	work context.Context // the partitions' contexts derive from it; ends at the drain's deadline

	mu        sync.Mutex
	parts     map[tp]*partition
	held      int   // records held and not finished or dropped
	heldBytes int64 // their keys' and values' bytes
	producing int   // records whose result or dead letter is being produced
	queue     []*delivery
	retries   retryHeap
	stopping  bool // the drain began: nothing more is submitted or retried
	closing   bool // the client is closing: revokes do not wait
	round     round

	commitMu sync.Mutex // one commit at a time, so that an older one never lands after a newer

	wakeSubmit chan struct{} // the queue grew, or stopping was set
	wakePoll   chan struct{} // a record was finished or dropped: there may be room
	wakeSettle chan struct{} // the retries changed, or a produce ended
}

// connect makes the client, after checking that the topics exist.
func (r *run[T]) connect(ctx context.Context) error {
	s := r.src
	opts := []kgo.Opt{
		kgo.SeedBrokers(s.Brokers...),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxBytes(int32(min(r.c.maxBytes, 1<<30))),
		kgo.RecordDeliveryTimeout(30 * time.Second),
		// The records held wait for their results' acks: a linger
		// would hold every one of them that long (MaxInFlight records
		// per linger at most), and the producer batches by itself
		// while a produce is in flight.
		kgo.ProducerLinger(0),
		// A paused partition that resumes waits for the fetch in
		// flight: bound that wait below franz-go's 5s.
		kgo.FetchMaxWait(500 * time.Millisecond),
	}
	opts = append(opts, s.Opts...)
	opts = append(opts,
		kgo.ConsumerGroup(s.Group),
		kgo.ConsumeTopics(s.Topics...),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(r.assigned),
		kgo.OnPartitionsRevoked(r.revoked),
		kgo.OnPartitionsLost(r.lost),
	)
	var err error
	var cl *kgo.Client
	if r.c.transactional {
		opts = append(opts, kgo.TransactionalID(s.TransactionalID), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
		if r.sess, err = kgo.NewGroupTransactSession(opts...); err == nil {
			cl = r.sess.Client()
		}
	} else {
		cl, err = kgo.NewClient(opts...)
	}
	if err != nil {
		return fmt.Errorf("statepipe/kafka: client: %w", err)
	}
	r.clp.CompareAndSwap(nil, cl)
	need := append([]string(nil), s.Topics...)
	if s.DeadLetter != "" {
		need = append(need, s.DeadLetter)
	}
	if s.Sink != nil {
		need = append(need, s.Sink.Topic)
	}
	if err := CheckTopics(ctx, kadm.NewClient(r.cl()), need...); err != nil {
		r.cl().Close()
		return err
	}
	return nil
}

// cl returns the client.
func (r *run[T]) cl() *kgo.Client { return r.clp.Load() }

// closeClient commits what finished, gives up the rest and leaves the
// group.
func (r *run[T]) closeClient() {
	if !r.c.transactional {
		r.commit(nil)
	}
	r.mu.Lock()
	r.closing = true
	for _, p := range r.parts {
		r.giveUp(p)
	}
	r.mu.Unlock()
	r.cl().AllowRebalance()
	if r.sess != nil {
		r.sess.Close()
	} else {
		r.cl().Close()
	}
}

// poll is the poller goroutine: it polls as many records as there is
// room for and hands them to the submitter, until stop ends.
func (r *run[T]) poll() {
	for {
		room := r.waitRoom()
		if room == 0 {
			return
		}
		fetches := r.cl().PollRecords(r.stop, room)
		if r.stop.Err() != nil {
			r.cl().AllowRebalance()
			r.endRound()
			return
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed) {
				return
			}
			r.c.log.Warn("statepipe/kafka: fetch failed", "topic", topic, "partition", partition, "err", err)
		})
		if fetches.NumRecords() == 0 {
			r.cl().AllowRebalance()
			if fetches.Err() != nil {
				// Do not spin on errors that persist.
				select {
				case <-time.After(pollPause):
				case <-r.stop.Done():
				}
			}
			continue
		}
		if r.sess != nil {
			if err := r.sess.Begin(); err != nil {
				r.cl().AllowRebalance()
				r.fail(fmt.Errorf("statepipe/kafka: begin transaction: %w", err))
				return
			}
			r.beginRound()
		}
		r.mu.Lock()
		now := time.Now()
		gaveBack := map[*partition]bool{}
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			p := r.parts[tp{fp.Topic, fp.Partition}]
			if p == nil || p.revoked || gaveBack[p] {
				return // BlockRebalanceOnPoll keeps the first from happening
			}
			if fp.HighWatermark >= 0 {
				p.hwm = fp.HighWatermark
			}
			for i, rec := range fp.Records {
				if r.full(p, now) && r.sess == nil {
					// Give the rest back: fetching of p starts again
					// at rec once it has room.
					r.pause(p)
					r.cl().SetOffsets(map[string]map[int32]kgo.EpochOffset{p.tp.topic: {p.tp.partition: {Epoch: rec.LeaderEpoch, Offset: rec.Offset}}})
					r.src.counters.givenBack.Add(uint64(len(fp.Records) - i))
					gaveBack[p] = true
					break
				}
				r.hold(p, rec)
			}
			if r.full(p, now) {
				r.pause(p)
			}
		})
		r.mu.Unlock()
		r.cl().AllowRebalance()
		if r.sess != nil {
			r.endRound()
		}
	}
}
