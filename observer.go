package statepipe

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// An Observer receives the engine's events: to trace requests, export
// metrics, or log. It is called synchronously on the goroutine where the
// event happens (a worker, or a batcher's flush), so it must be fast and
// must not block; it is called concurrently from several goroutines.
//
// The events of one request come in the order they happen, with one
// exception: the StageDone and Parked of the stage that parks a request
// are reported when that stage returns, and a batch that flushes at once
// may already have resumed the request (Resumed, and what follows). A
// panic in Observe is recovered and dropped with its event, so that an
// observer's bug cannot take a request or the engine down with it: the
// first panic is logged ([WithLogger]) and every one is counted in
// [Stats].ObserverPanics.
//
// Without an Observer (the default) the engine does no work for events.
// With one, every stage run is timed (two clock readings), and Observe is
// called once per event with an Event passed by value: the engine
// allocates nothing for it.
type Observer interface {
	Observe(e Event)
}

// A FlushObserver is an Observer that is also told of each flush before
// it runs, and gives the flush call its context: so that what flush does
// (a bulk call's own spans, say) is traced under the observer's span of
// the flush. The context it returns is passed to flush and is the Ctx of
// the flush's BatchFlushed event; it must derive from ctx. Like Observe,
// FlushStarting must be fast and must not block.
type FlushObserver interface {
	Observer
	FlushStarting(ctx context.Context, batch string, reason FlushReason, members []uint64) context.Context
}

// ObserverFunc adapts a function to an Observer.
type ObserverFunc func(e Event)

// Observe calls f(e).
func (f ObserverFunc) Observe(e Event) { f(e) }

// EventKind says what happened.
type EventKind int

const (
	// RequestStarted: a worker picked up a submitted request. Duration is
	// the time it waited in the queue.
	RequestStarted EventKind = iota
	// StageDone: a stage returned (or panicked). Duration is its run
	// time; Err is the request's error after it, if any (a *PanicError
	// for a panic).
	StageDone
	// Parked: the stage handed the request to the batcher named Batch.
	Parked
	// Resumed: the batcher sent the request on (Err set if it failed it
	// or its context ended while parked). Duration is the time parked.
	Resumed
	// RequestDone: the request left the machine for its group's output,
	// with Err. Duration is its run time since it was picked up.
	RequestDone
	// BatchFlushed: the batcher named Batch ran flush for Size requests
	// (their ids in Members), for Reason; Duration is the call's, Err its
	// error (a *PanicError for a panic).
	BatchFlushed
	// Retrying: Attempt of the stage named Stage (or of the flush of the
	// batcher named Batch) failed with Err, marked by Retry; the request
	// runs it again after Duration.
	Retrying
)

var eventKindNames = [...]string{"RequestStarted", "StageDone", "Parked", "Resumed", "RequestDone", "BatchFlushed", "Retrying"}

func (k EventKind) String() string {
	if k < 0 || int(k) >= len(eventKindNames) {
		return "EventKind(?)"
	}
	return eventKindNames[k]
}

// Event is one thing the engine did. Which fields are set depends on Kind.
type Event struct {
	Kind     EventKind
	Request  uint64          // the request's id, unique within the Pipelines (not for BatchFlushed)
	Group    uint64          // the id of the request's group
	Ctx      context.Context // the request's context (the flush's for BatchFlushed)
	Stage    string          // the stage, for StageDone, Parked and Retrying
	Batch    string          // the batcher's name, for Parked, Resumed, BatchFlushed and a flush's Retrying
	Duration time.Duration
	Err      error

	Attempt int // Retrying only: the attempt that failed, 1 for the first

	Reason  FlushReason // BatchFlushed only
	Size    int         // BatchFlushed only
	Members []uint64    // BatchFlushed only: the ids of the flushed requests; read-only, valid during Observe
}

// WithObserver sends the engine's events to o; see [Observer] for the cost.
// Off by default.
func WithObserver(o Observer) Option {
	return optionFunc(func(c *config) {
		if f, isFunc := o.(ObserverFunc); o == nil || isFunc && f == nil {
			c.problems = append(c.problems, "WithObserver: nil observer")
		}
		c.observer = o
	})
}

// safeObserver returns o with its panics recovered (see Observer), and
// keeps it a FlushObserver if it is one.
func safeObserver(o Observer, log *slog.Logger) Observer {
	s := &recovering{o: o, log: log}
	if fo, ok := o.(FlushObserver); ok {
		return &recoveringFlush{recovering: s, fo: fo}
	}
	return s
}

type recovering struct {
	o      Observer
	log    *slog.Logger
	panics atomic.Uint64
}

func (s *recovering) Observe(e Event) {
	defer func() {
		if v := recover(); v != nil {
			if s.panics.Add(1) == 1 {
				s.log.Error("statepipe: observer panicked; its events are dropped while it does", "event", e.Kind, "panic", v)
			}
		}
	}()
	s.o.Observe(e)
}

// recoveringFlush passes FlushStarting on; a panic there is the flush's
// (Batcher.call recovers it and fails the batch).
type recoveringFlush struct {
	*recovering
	fo FlushObserver
}

func (s *recoveringFlush) FlushStarting(ctx context.Context, batch string, reason FlushReason, members []uint64) context.Context {
	return s.fo.FlushStarting(ctx, batch, reason, members)
}

// observerPanics returns how many panics o recovered.
func observerPanics(o Observer) uint64 {
	switch s := o.(type) {
	case *recovering:
		return s.panics.Load()
	case *recoveringFlush:
		return s.panics.Load()
	}
	return 0
}
