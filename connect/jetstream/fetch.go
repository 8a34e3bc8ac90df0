package jetstream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/statepipe/statepipe"
	"github.com/statepipe/statepipe/connect"
)

// lane is one consumer a run fetches from: the Source's Consumer, or
// one partition's.
type lane struct {
	name    string // the partition's subject, or the consumer's name
	cons    jetstream.Consumer
	group   string // the priority group to pull from, if any
	ordered bool   // settle its messages in the order they were fetched
	// pullEvery, for a pinned lane, is how often it must pull at least,
	// even without room, so that its pin does not pass while it holds
	// messages; 0 for a lane without a pin.
	pullEvery time.Duration
	// takeover is set on a partition's lane until it has rewound the
	// partition to its ack floor (see takeOver); only its fetcher uses it.
	takeover bool
	// lastAcked is the stream sequence of the last message of an ordered
	// lane acked, for handOver.
	lastAcked atomic.Uint64
	// pinID is the pin the lane's messages last came with (Nats-Pin-Id);
	// only its fetcher writes it.
	pinID    atomic.Pointer[string]
	lag      atomic.Int64
	held     atomic.Int64
	stopped  context.Context // ends when the lane must stop fetching
	stopLane context.CancelFunc

	mu   sync.Mutex
	fifo []*delivery // an ordered lane's held messages, in fetch order
}

func newLane(ctx context.Context, name string, cons jetstream.Consumer, group string, ordered bool) *lane {
	l := &lane{name: name, cons: cons, group: group, ordered: ordered}
	l.lag.Store(-1)
	l.stopped, l.stopLane = context.WithCancel(ctx)
	return l
}

// startFetching starts the fetchers and returns a channel closed once
// they have all ended and the group is closed.
func (r *run[T]) startFetching() <-chan struct{} {
	done := make(chan struct{})
	if p := r.src.Partitions; p != nil {
		go func() {
			defer close(done)
			defer r.g.Close() // end of input: Out closes after the last request
			r.partitioned(p)
		}()
		return done
	}
	l := newLane(r.stop, r.src.Consumer.CachedInfo().Name, r.src.Consumer, r.src.PriorityGroup, false)
	r.src.lanes.Store(&laneSet{lanes: []*lane{l}})
	r.owned.Store(1)
	go func() {
		defer close(done)
		defer r.g.Close()
		r.fetch(l)
	}()
	return done
}

// fetch is a lane's fetcher: it fetches as much as there is room for
// (its share of it), decodes and submits, until the lane stops.
func (r *run[T]) fetch(l *lane) {
	wait := r.c.fetchWait
	if l.pullEvery > 0 {
		wait = min(wait, l.pullEvery)
	}
	opts := []jetstream.FetchOpt{jetstream.FetchMaxWait(wait)}
	if l.group != "" {
		opts = append(opts, jetstream.FetchPriorityGroup(l.group))
	}
	pause := 10 * time.Millisecond
	for {
		n := r.reserve(l)
		if n == 0 {
			return
		}
		if n < 0 {
			r.keepPin(l)
			continue
		}
		got, dropped := 0, 0
		batch, err := l.cons.Fetch(n, opts...)
		if err == nil {
			for msg := range batch.Messages() {
				if l.takeover {
					dropped++
					continue
				}
				got++
				r.accept(l, msg)
			}
			err = batch.Error()
		}
		r.unreserve(n - got)
		if dropped > 0 {
			r.takeOver(l)
		}
		switch {
		case err == nil || errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages):
			if got == 0 && l.group == "" {
				l.lag.Store(0) // a fetch that waited and got nothing: nothing pending
			}
			pause = 10 * time.Millisecond
			continue
		case errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, nats.ErrConnectionClosed) || r.consumerGone(l, err):
			r.fail(fmt.Errorf("statepipe/jetstream: fetch from %s: %w", l.name, err))
			return
		}
		// Most fetch errors pass: a server restarting, a leader moving,
		// a partition pinned to another process.
		r.c.log.Debug("statepipe/jetstream: fetch failed; retrying", "lane", l.name, "err", err, "in", pause)
		select {
		case <-time.After(pause):
		case <-l.stopped.Done():
			return
		}
		pause = min(2*pause, 2*time.Second)
	}
}

// consumerGone reports whether a fetch failed because the consumer does
// not exist: a pull to a consumer that is gone finds no responder, but so
// does one sent while a server is still loading its streams, so ask.
func (r *run[T]) consumerGone(l *lane, err error) bool {
	if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false
	}
	ctx, cancel := context.WithTimeout(l.stopped, r.c.pubTimeout)
	defer cancel()
	_, err = l.cons.Info(ctx)
	return errors.Is(err, jetstream.ErrConsumerNotFound)
}

// reserve waits until there is room to fetch for and reserves it: at
// least half of MaxInFlight, or any if nothing is held (so that fetches
// are not tiny), and at most the lane's share of MaxInFlight, divided
// evenly among the lanes the run has, so that an idle lane's long poll
// never holds room another lane needs. It returns 0 once the lane must
// stop, and -1 when a pinned lane has waited pullEvery: time to keep its
// pin.
func (r *run[T]) reserve(l *lane) int {
	var keep <-chan time.Time
	if l.pullEvery > 0 {
		t := time.NewTimer(l.pullEvery)
		defer t.Stop()
		keep = t.C
	}
	limit := r.c.maxInFlight
	for {
		share := max(1, limit/max(1, int(r.owned.Load())))
		lowWater := max(1, min(share, limit/2))
		if l.stopped.Err() != nil {
			return 0
		}
		r.mu.Lock()
		used := len(r.held) + r.reserved
		room := min(limit-used, share)
		if room >= lowWater || (used == 0 && room > 0) {
			r.reserved += room
			r.mu.Unlock()
			return room
		}
		r.mu.Unlock()
		select {
		case <-r.room:
		case <-keep:
			return -1
		case <-l.stopped.Done():
			return 0
		}
	}
}

// takeOver rewinds a partition that this process has just been pinned
// to, once: the consumer delivers again from its ack floor, the first
// message its previous owner did not settle (acks are in order), in
// stream order. The messages of the first batch, which told that the pin
// is this process's, were dropped unseen; they come again. Whatever the
// previous owner left, handed over or dead with it, this process so
// processes the partition in order, without waiting for AckWait.
func (r *run[T]) takeOver(l *lane) {
	ctx, cancel := context.WithTimeout(l.stopped, r.c.pubTimeout)
	defer cancel()
	_, err := r.stream.ResetConsumer(ctx, l.cons.CachedInfo().Name)
	switch {
	case err == nil:
		l.takeover = false
	case l.stopped.Err() != nil:
	case errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrJetStreamNotEnabled):
		r.fail(fmt.Errorf("statepipe/jetstream: rewinding partition %s: %w", l.name, err))
	default:
		// An old server has no consumer reset: go on without; the
		// dropped messages come back after AckWait, maybe after later
		// ones.
		r.c.log.Error("statepipe/jetstream: cannot rewind a partition taken over; its order may break once",
			"partition", l.name, "err", err)
		l.takeover = false
	}
}

// keepPin sends a pinned lane's pull that cannot deliver anything (at
// most 1 byte): the server counts it as the pinned client's pull and keeps
// the pin, while the lane has no room for messages or is handing its
// partition over.
func (r *run[T]) keepPin(l *lane) {
	// Not FetchBytes: its batch of a million makes a channel that size.
	batch, err := l.cons.Fetch(1, jetstream.FetchMaxBytes(1), jetstream.FetchMaxWait(max(l.pullEvery/2, time.Millisecond)),
		jetstream.FetchPriorityGroup(l.group))
	if err == nil {
		for msg := range batch.Messages() { // none can fit; take it if one does
			if l.takeover {
				continue // delivered again after the rewind
			}
			r.mu.Lock()
			r.reserved++
			r.mu.Unlock()
			r.accept(l, msg)
		}
		err = batch.Error()
	}
	if errors.Is(err, jetstream.ErrPinIDMismatch) {
		r.c.log.Warn("statepipe/jetstream: a partition's pin passed to another process while this one held it; its order may break",
			"partition", l.name)
	}
}

// unreserve gives back places a fetch reserved and did not fill.
func (r *run[T]) unreserve(n int) {
	if n == 0 {
		return
	}
	r.mu.Lock()
	r.reserved -= n
	r.mu.Unlock()
	r.wake()
}

// wake tells a fetcher waiting for room that there may be some.
func (r *run[T]) wake() {
	select {
	case r.room <- struct{}{}:
	default:
	}
}

// accept takes one fetched message: holds it, decodes it and submits it.
func (r *run[T]) accept(l *lane, msg jetstream.Msg) {
	ct := &r.src.counters
	ct.fetched.Add(1)
	meta, err := msg.Metadata()
	if err != nil { // not a JetStream delivery: nothing to redeliver
		r.c.log.Error("statepipe/jetstream: message without metadata; terminating it", "subject", msg.Subject(), "err", err)
		_ = msg.TermWithReason("no metadata")
		r.unreserve(1)
		return
	}
	l.lag.Store(int64(meta.NumPending))
	if id := msg.Headers().Get("Nats-Pin-Id"); id != "" && l.group != "" {
		l.pinID.Store(&id)
	}
	d := &delivery{msg: msg, meta: meta, lane: l, size: len(msg.Data()), touched: time.Now()}
	if meta.NumDelivered > 1 {
		ct.redelivered.Add(1)
	}
	r.hold(d)
	if l.stopped.Err() != nil && !l.ordered {
		// Arrived after the drain began: give it back at once. Not on an
		// ordered lane: the server might hand the messages after it to
		// the partition's next owner before it applies the nak, so
		// process it; the lane still holds the pin.
		r.finish(d, action{kind: actRelease})
		return
	}
	data, err := connect.Decode(r.src.Decode, msg.Data())
	if err != nil {
		ct.decodeFailed.Add(1)
		r.deadLetter(d, KindDecode, err)
		return
	}
	if err := r.g.Submit(context.WithValue(r.work, deliveryKey{}, d), data); err != nil {
		// The drain's deadline passed while waiting for room, or the
		// Pipelines were closed under the Source.
		r.finish(d, action{kind: actRelease})
		if errors.Is(err, statepipe.ErrClosed) {
			r.fail(fmt.Errorf("statepipe/jetstream: the Pipelines closed while the Source ran: %w", err))
		}
	}
}

// hold counts d as held, in the place its fetch reserved.
func (r *run[T]) hold(d *delivery) {
	r.mu.Lock()
	r.held[d] = struct{}{}
	r.reserved--
	r.mu.Unlock()
	if d.lane.ordered {
		d.lane.mu.Lock()
		d.lane.fifo = append(d.lane.fifo, d)
		d.lane.mu.Unlock()
	}
	d.lane.held.Add(1)
	r.src.counters.held.Add(1)
	r.src.counters.heldBytes.Add(int64(d.size))
}

// settled forgets d and wakes the fetcher. It reports false if d was not
// held any more (released at the drain's deadline).
func (r *run[T]) settled(d *delivery) bool {
	r.mu.Lock()
	_, ok := r.held[d]
	delete(r.held, d)
	r.mu.Unlock()
	if ok {
		d.lane.held.Add(-1)
		r.src.counters.held.Add(-1)
		r.src.counters.heldBytes.Add(-int64(d.size))
	}
	r.wake()
	return ok
}
