package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/statepipe/statepipe"
	"github.com/statepipe/statepipe/connect"
	"github.com/twmb/franz-go/pkg/kgo"
)

// shed gives back, from each slow partition over its limit, the records
// at its end that wait behind their lane's head, and pauses it, so that
// a stuck ordered partition that filled the process makes room for the
// others. They are fetched again once it has room. Called by the poller
// with r.mu held.
func (r *run[T]) shed(now time.Time) {
	for _, p := range r.parts {
		if p.revoked || !r.full(p, now) {
			continue
		}
		cut := len(p.held)
		for cut > 0 && p.held[cut-1].behind {
			cut--
		}
		if cut == len(p.held) {
			continue
		}
		from := p.held[cut].rec
		for _, d := range p.held[cut:] {
			d.lane.wait = slices.DeleteFunc(d.lane.wait, func(w *delivery) bool { return w == d })
			d.behind, d.lane = false, nil
			d.stage = dropped
			p.unfinished--
			p.bytes -= d.size()
			r.held--
			r.heldBytes -= d.size()
		}
		r.src.counters.givenBack.Add(uint64(len(p.held) - cut))
		clear(p.held[cut:])
		p.held = p.held[:cut]
		r.pause(p)
		r.cl().SetOffsets(map[string]map[int32]kgo.EpochOffset{p.tp.topic: {p.tp.partition: {Epoch: from.LeaderEpoch, Offset: from.Offset}}})
	}
}

// pollPause is the pause after a poll that returned only errors.
const pollPause = 50 * time.Millisecond

// waitRoom waits until there is room to poll for and returns it; 0 once
// polling must stop. In a transaction it also waits for the last round
// to end.
func (r *run[T]) waitRoom() int {
	for {
		if r.stop.Err() != nil {
			return 0
		}
		r.mu.Lock()
		room := r.c.maxInFlight - r.held
		if r.heldBytes >= r.c.maxBytes || (r.sess != nil && r.held > 0) {
			room = 0
		}
		if room == 0 && r.sess == nil {
			r.shed(time.Now())
		}
		r.mu.Unlock()
		if room > 0 {
			return room
		}
		t := time.NewTimer(slowAfter / 4)
		select {
		case <-r.wakePoll:
		case <-t.C:
		case <-r.stop.Done():
			t.Stop()
			return 0
		}
		t.Stop()
	}
}

// hold takes a polled record into p and queues it for submission.
// Called with r.mu held.
func (r *run[T]) hold(p *partition, rec *kgo.Record) {
	d := &delivery{rec: rec, part: p, polled: time.Now()}
	p.held = append(p.held, d)
	p.unfinished++
	p.bytes += d.size()
	r.held++
	r.heldBytes += d.size()
	r.src.counters.fetched.Add(1)
	r.enqueue(d)
}

// enqueue queues d for submission, behind its lane's head in an ordered
// Source. Called with r.mu held.
func (r *run[T]) enqueue(d *delivery) {
	if r.stopping {
		r.drop(d)
		return
	}
	d.stage = queued
	if r.src.Order != Unordered && d.lane == nil {
		key := ""
		if r.src.Order == KeyOrder {
			key = string(d.rec.Key)
		}
		l := d.part.lanes[key]
		if l == nil {
			l = &lane{key: key}
			d.part.lanes[key] = l
		}
		d.lane = l
		if l.busy {
			l.wait = append(l.wait, d)
			d.behind = true
			return
		}
		l.busy = true
	}
	r.queue = append(r.queue, d)
	wake(r.wakeSubmit)
}

// full reports whether p should take no more records: it holds its
// limit (with MaxPartitionInFlight unset: half of MaxInFlight, and only
// once it is slow, its oldest unfinished record polled at least
// slowAfter ago, since pausing a partition that keeps up only costs the
// fetches after the resume), or it keeps too many finished records
// behind an unfinished one. Called with r.mu held.
func (r *run[T]) full(p *partition, now time.Time) bool {
	switch {
	case len(p.held) >= windowFactor*r.c.partitionLimit:
		return true
	case p.unfinished < r.c.partitionLimit:
		return false
	}
	return r.c.strictLimit || p.oldest().Before(now.Add(-slowAfter))
}

// slowAfter is how long a partition's oldest unfinished record must have
// been held for the partition to count as slow.
const slowAfter = time.Second

// pause pauses fetching of p. Called with r.mu held.
func (r *run[T]) pause(p *partition) {
	if p.paused {
		return
	}
	p.paused = true
	r.src.counters.paused.Add(1)
	r.cl().PauseFetchPartitions(map[string][]int32{p.tp.topic: {p.tp.partition}})
}

// windowFactor bounds the finished records a partition keeps behind an
// unfinished one (waiting for it to be committed past) to this many times
// MaxPartitionInFlight: past it, the partition pauses too.
const windowFactor = 16

// resumeIfRoom resumes fetching of p once half its limit is free. Called
// with r.mu held.
func (r *run[T]) resumeIfRoom(p *partition) {
	if !p.paused || p.unfinished > r.c.partitionLimit/2 || len(p.held) >= windowFactor*r.c.partitionLimit/2 {
		return
	}
	p.paused = false
	r.cl().ResumeFetchPartitions(map[string][]int32{p.tp.topic: {p.tp.partition}})
}

// submit is the submitter goroutine: it decodes and submits the queued
// records in order, until the drain begins; then it closes the group.
func (r *run[T]) submit() {
	defer r.g.Close()
	for {
		r.mu.Lock()
		for len(r.queue) == 0 && !r.stopping {
			r.mu.Unlock()
			<-r.wakeSubmit
			r.mu.Lock()
		}
		if r.stopping {
			for _, d := range r.queue {
				r.drop(d)
			}
			r.queue = nil
			r.mu.Unlock()
			return
		}
		d := r.queue[0]
		r.queue[0] = nil
		r.queue = r.queue[1:]
		if d.stage != queued {
			r.mu.Unlock()
			continue // dropped while queued
		}
		d.stage = inPipe
		d.attempt++
		d.part.busy++
		ctx := context.WithValue(d.part.ctx, recordKey{}, d)
		r.mu.Unlock()

		data, err := connect.Decode(r.src.Decode, d.rec.Value)
		if err != nil {
			r.src.counters.decodeFailed.Add(1)
			r.outcome(d, err)
			continue
		}
		if err := r.g.Submit(ctx, data); err != nil {
			r.outcome(d, err)
			if errors.Is(err, statepipe.ErrClosed) {
				r.fail(fmt.Errorf("statepipe/kafka: the Pipelines closed while the Source ran: %w", err))
			}
		}
	}
}

// wake signals ch without blocking.
func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
