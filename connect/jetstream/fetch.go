package jetstream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/statepipe/statepipe"
)

// fetch is the fetcher goroutine: it fetches as much as there is room for,
// decodes and submits, until stop ends; then it closes the group.
func (r *run[T]) fetch() {
	defer close(r.fetching)
	defer r.g.Close() // end of input: Out closes after the last request
	opts := []jetstream.FetchOpt{jetstream.FetchMaxWait(r.c.fetchWait)}
	if g := r.src.PriorityGroup; g != "" {
		opts = append(opts, jetstream.FetchPriorityGroup(g))
	}
	pause := 10 * time.Millisecond
	for {
		n := r.waitRoom()
		if n == 0 {
			return
		}
		batch, err := r.src.Consumer.Fetch(n, opts...)
		if err == nil {
			for msg := range batch.Messages() {
				r.accept(msg)
			}
			err = batch.Error()
		}
		switch {
		case err == nil || errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages):
			pause = 10 * time.Millisecond
			continue
		case errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, nats.ErrConnectionClosed) || r.consumerGone(err):
			r.fail(fmt.Errorf("statepipe/jetstream: fetch: %w", err))
			return
		}
		// Most fetch errors pass: a server restarting, a leader moving.
		r.c.log.Warn("statepipe/jetstream: fetch failed; retrying", "err", err, "in", pause)
		select {
		case <-time.After(pause):
		case <-r.stop.Done():
			return
		}
		pause = min(2*pause, 2*time.Second)
	}
}

// consumerGone reports whether a fetch failed because the consumer does
// not exist: a pull to a consumer that is gone finds no responder, but so
// does one sent while a server is still loading its streams, so ask.
func (r *run[T]) consumerGone(err error) bool {
	if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false
	}
	ctx, cancel := context.WithTimeout(r.stop, r.c.pubTimeout)
	defer cancel()
	_, err = r.src.Consumer.Info(ctx)
	return errors.Is(err, jetstream.ErrConsumerNotFound)
}

// waitRoom waits until there is room to fetch for: at least lowWater
// messages, or any if nothing is held (so that fetches are not tiny), and
// returns it; 0 once fetching must stop.
func (r *run[T]) waitRoom() int {
	for {
		if r.stop.Err() != nil {
			return 0
		}
		r.mu.Lock()
		held := len(r.held)
		r.mu.Unlock()
		room := r.c.maxInFlight - held
		if room >= r.c.lowWater || (held == 0 && room > 0) {
			return room
		}
		select {
		case <-r.room:
		case <-r.stop.Done():
			return 0
		}
	}
}

// accept takes one fetched message: holds it, decodes it and submits it.
func (r *run[T]) accept(msg jetstream.Msg) {
	ct := &r.src.counters
	ct.fetched.Add(1)
	meta, err := msg.Metadata()
	if err != nil { // not a JetStream delivery: nothing to redeliver
		r.c.log.Error("statepipe/jetstream: message without metadata; terminating it", "subject", msg.Subject(), "err", err)
		_ = msg.TermWithReason("no metadata")
		return
	}
	d := &delivery{msg: msg, meta: meta, touched: time.Now()}
	if meta.NumDelivered > 1 {
		ct.redelivered.Add(1)
	}
	r.hold(d)
	if r.stop.Err() != nil {
		r.release(d) // arrived after the drain began: give it back at once
		return
	}
	data, err := r.decode(msg.Data())
	if err != nil {
		ct.decodeFailed.Add(1)
		r.deadLetter(d, KindDecode, &DecodeError{Err: err})
		return
	}
	if err := r.g.Submit(context.WithValue(r.work, deliveryKey{}, d), data); err != nil {
		// The drain's deadline passed while waiting for room, or the
		// Pipelines were closed under the Source.
		r.release(d)
		if errors.Is(err, statepipe.ErrClosed) {
			r.fail(fmt.Errorf("statepipe/jetstream: the Pipelines closed while the Source ran: %w", err))
		}
	}
}

func (r *run[T]) decode(b []byte) (v T, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return r.src.Decode(b)
}

func (r *run[T]) hold(d *delivery) {
	r.mu.Lock()
	r.held[d] = struct{}{}
	r.mu.Unlock()
	r.src.counters.held.Add(1)
}

// settled forgets d and wakes the fetcher. It reports false if d was not
// held any more (released at the drain's deadline).
func (r *run[T]) settled(d *delivery) bool {
	r.mu.Lock()
	_, ok := r.held[d]
	delete(r.held, d)
	r.mu.Unlock()
	if ok {
		r.src.counters.held.Add(-1)
	}
	select {
	case r.room <- struct{}{}:
	default:
	}
	return ok
}
