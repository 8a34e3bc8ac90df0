package otel

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/statepipe/statepipe"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Observer turns the events of one [statepipe.Pipelines] into OpenTelemetry
// spans and metrics; see the package documentation for what it records.
// Pass it to [statepipe.WithObserver].
//
// Use one Observer per Pipelines: request ids are unique only within a
// Pipelines, and the Observer finds a request's span by its id. Observe is
// safe for concurrent use, as the engine requires.
//
// An Observer starts no goroutine and has nothing to close. The engine
// ends every request it starts, so once [statepipe.Pipelines.Close]
// returns every span the Observer opened has ended; flush the
// TracerProvider (Shutdown or ForceFlush) after that to export them.
type Observer struct {
	tracer       trace.Tracer
	stageSpans   bool
	requestAttrs func(context.Context) []attribute.KeyValue
	m            instruments

	flights  *inflight
	stages   *cache[string, nameAttrs]
	batches  *cache[flushKey, flushAttrs]
	batchers *cache[string, nameAttrs] // for retries of flushes: the batcher alone
	bufs     sync.Pool                 // *linkBuf, for flushes
}

var _ statepipe.Observer = (*Observer)(nil)

// NewObserver returns an Observer that records to the global tracer and
// meter providers, or to those given with [WithTracerProvider] and
// [WithMeterProvider]. It creates its instruments now; an error from the
// meter, or an invalid option (wrapping [statepipe.ErrInvalidOption]), is
// returned.
func NewObserver(opts ...Option) (*Observer, error) {
	var c config
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	m, err := newInstruments(c.mp.Meter(ScopeName))
	if err != nil {
		return nil, err
	}
	return &Observer{
		tracer:       c.tp.Tracer(ScopeName),
		stageSpans:   c.stageSpans,
		requestAttrs: c.requestAttrs,
		m:            m,
		flights:      newInflight(),
		stages:       newCache(newNameAttrs),
		batches:      newCache(newFlushAttrs),
		batchers:     newCache(func(b string) nameAttrs { kv := KeyBatcher.String(b); return nameAttrs{newAttrSet(kv), kv} }),
		bufs:         sync.Pool{New: func() any { return new(linkBuf) }},
	}, nil
}

// Observe records e. The engine calls it; see [statepipe.Observer].
func (o *Observer) Observe(e statepipe.Event) {
	switch e.Kind {
	case statepipe.RequestStarted:
		o.started(&e)
	case statepipe.StageDone:
		o.stageDone(&e)
	case statepipe.Parked:
		o.parked(&e)
	case statepipe.Resumed:
		o.resumed(&e)
	case statepipe.RequestDone:
		o.done(&e)
	case statepipe.BatchFlushed:
		o.flushed(&e)
	case statepipe.Retrying:
		o.retrying(&e)
	case statepipe.WorkersScaled:
		o.scaled(&e)
	}
}

// scaled records the worker count autoscaling set, and why.
func (o *Observer) scaled(e *statepipe.Event) {
	ctx := context.Background()
	o.m.workers.Record(ctx, int64(e.Size))
	if i := int(e.Scale - statepipe.ScaleUp); i >= 0 && i < len(o.m.scaleReasons) {
		o.m.workerChanges.Add(ctx, 1, o.m.scaleReasons[i].add...)
	}
}

// retrying counts a retry, by stage (or batcher, for a flush), and notes
// it on the request span with the attempt, the wait and the error.
func (o *Observer) retrying(e *statepipe.Event) {
	fl, ok := o.flightOf(e)
	var as attrSet
	var kv attribute.KeyValue
	if e.Batch != "" {
		ba := o.batchers.get(e.Batch)
		as, kv = ba.attrSet, ba.kv
	} else {
		sa := o.stages.get(e.Stage)
		as, kv = sa.attrSet, sa.kv
	}
	o.m.retries.Add(fl.ctx, 1, as.add...)
	if ok && fl.span.IsRecording() {
		fl.span.AddEvent(EventRetry, trace.WithAttributes(kv, KeyAttempt.Int(e.Attempt),
			KeyDuration.Float64(e.Duration.Seconds()), KeyError.String(e.Err.Error())))
	}
}

// started opens the request span, back-dated to the Submit: the event's
// Duration is the time the request queued.
func (o *Observer) started(e *statepipe.Event) {
	start := time.Now().Add(-e.Duration)
	parent := e.Ctx
	if parent == nil {
		parent = context.Background()
	}
	// The kind is left to its default, Internal: WithSpanKind would
	// allocate a closure. The ids are set only on a span that records;
	// the user's attributes go in at the start, where a sampler sees them.
	var ctx context.Context
	var span trace.Span
	if o.requestAttrs != nil {
		ctx, span = o.tracer.Start(parent, SpanRequest, trace.WithTimestamp(start),
			trace.WithAttributes(o.requestAttrs(parent)...))
	} else {
		ctx, span = o.tracer.Start(parent, SpanRequest, trace.WithTimestamp(start))
	}
	if span.IsRecording() {
		span.SetAttributes(KeyRequestID.Int64(int64(e.Request)), KeyGroupID.Int64(int64(e.Group)))
	}
	if old, dup := o.flights.put(e.Request, flight{ctx: ctx, span: span, start: start, wait: e.Duration}); dup {
		// The same id started twice: the Observer serves two Pipelines.
		// End the older span rather than leak it.
		old.span.SetStatus(codes.Error, "statepipe/otel: request id reused; use one Observer per Pipelines")
		old.span.End()
	}
}

// flightOf returns the request's flight, or one with e's context and no
// span if it is unknown (which the engine's guarantees rule out).
func (o *Observer) flightOf(e *statepipe.Event) (flight, bool) {
	fl, ok := o.flights.get(e.Request)
	if !ok {
		fl.ctx = e.Ctx
		if fl.ctx == nil {
			fl.ctx = context.Background()
		}
	}
	return fl, ok
}

func (o *Observer) stageDone(e *statepipe.Event) {
	fl, ok := o.flightOf(e)
	sa := o.stages.get(e.Stage)
	o.m.stageRuns.Add(fl.ctx, 1, sa.add...)
	o.m.stageDuration.Record(fl.ctx, e.Duration.Seconds(), sa.rec...)
	if e.Err != nil {
		o.m.stageErrors.Add(fl.ctx, 1, sa.add...)
	}
	if !ok || !fl.span.IsRecording() {
		return
	}
	if o.stageSpans {
		end := time.Now()
		_, span := o.tracer.Start(fl.ctx, e.Stage, trace.WithTimestamp(end.Add(-e.Duration)),
			trace.WithAttributes(sa.kv))
		if e.Err != nil {
			span.SetStatus(codes.Error, e.Err.Error())
		}
		span.End(trace.WithTimestamp(end))
		return
	}
	if e.Err != nil {
		fl.span.AddEvent(e.Stage, trace.WithAttributes(KeyDuration.Float64(e.Duration.Seconds()),
			KeyError.String(e.Err.Error())))
		return
	}
	fl.span.AddEvent(e.Stage, trace.WithAttributes(KeyDuration.Float64(e.Duration.Seconds())))
}

func (o *Observer) parked(e *statepipe.Event) {
	// The time is kept because Resumed may not carry the time parked.
	fl, ok := o.flights.park(e.Request, time.Now())
	if ok && fl.span.IsRecording() {
		fl.span.AddEvent(EventParked, trace.WithAttributes(KeyBatcher.String(e.Batch)))
	}
}

func (o *Observer) resumed(e *statepipe.Event) {
	fl, ok := o.flightOf(e)
	if !ok || !fl.span.IsRecording() {
		return
	}
	d := e.Duration
	if d == 0 && !fl.parked.IsZero() {
		d = time.Since(fl.parked)
	}
	attrs := []attribute.KeyValue{KeyBatcher.String(e.Batch), KeyDuration.Float64(d.Seconds())}
	if e.Err != nil {
		attrs = append(attrs, KeyError.String(e.Err.Error()))
	}
	fl.span.AddEvent(EventResumed, trace.WithAttributes(attrs...))
}

// done ends the request span. Its end is its start plus the queue wait and
// the run time the engine measured, so no clock is read here.
func (o *Observer) done(e *statepipe.Event) {
	fl, ok := o.flights.take(e.Request)
	if !ok {
		fl.ctx = context.Background()
	}
	total := fl.wait + e.Duration
	outcome := o.m.ok
	if e.Err != nil {
		outcome = o.m.failed
	}
	o.m.requests.Add(fl.ctx, 1, outcome.add...)
	o.m.requestDuration.Record(fl.ctx, total.Seconds(), outcome.rec...)
	if !ok {
		return
	}
	if !fl.span.IsRecording() {
		fl.span.End() // no options to build for a span that keeps nothing
		return
	}
	end := fl.start.Add(total)
	if e.Err != nil {
		recordError(fl.span, e.Err, end)
	}
	fl.span.End(trace.WithTimestamp(end))
}

// linkBuf is reused from flush to flush: a batch can have thousands of
// members.
type linkBuf struct {
	links []trace.Link
	spans []trace.Span
}

// FlushStarting starts the flush span as the flush begins and returns a
// context carrying it: flush runs under it, so that spans the user starts
// in flush (the bulk call's) are its children. It implements
// statepipe.FlushObserver. (An observer that wraps this one without
// forwarding FlushStarting still gets flush spans, back-dated when the
// flush ends, with no children.)
func (o *Observer) FlushStarting(ctx context.Context, batch string, reason statepipe.FlushReason, members []uint64) context.Context {
	ctx, span := o.startFlush(ctx, batch, reason, members, time.Now())
	return context.WithValue(ctx, flushSpanKey{}, span)
}

// flushSpanKey marks a flush context made by FlushStarting: its value is
// the flush span, which flushed ends.
type flushSpanKey struct{}

// startFlush starts a flush span at start, with a link to each member's
// request span and a link back from each.
func (o *Observer) startFlush(ctx context.Context, batch string, reason statepipe.FlushReason, members []uint64, start time.Time) (context.Context, trace.Span) {
	fa := o.batches.get(flushKey{batch, reason})
	buf := o.bufs.Get().(*linkBuf)
	for _, id := range members {
		fl, ok := o.flights.get(id)
		if !ok {
			continue
		}
		if sc := fl.span.SpanContext(); sc.IsValid() {
			buf.links = append(buf.links, trace.Link{SpanContext: sc})
			buf.spans = append(buf.spans, fl.span)
		}
	}
	ctx, span := o.tracer.Start(ctx, SpanFlush, trace.WithTimestamp(start), trace.WithLinks(buf.links...),
		trace.WithAttributes(fa.batcher, fa.reason, KeyBatchSize.Int(len(members))))
	if span.IsRecording() {
		back := trace.Link{SpanContext: span.SpanContext()}
		for _, s := range buf.spans {
			s.AddLink(back)
		}
	}
	clear(buf.links)
	clear(buf.spans)
	buf.links, buf.spans = buf.links[:0], buf.spans[:0]
	o.bufs.Put(buf)
	return ctx, span
}

// flushed ends the flush's span, the one FlushStarting began or else one
// back-dated to the flush's start, with the flush's error, and records the
// flush's metrics.
func (o *Observer) flushed(e *statepipe.Event) {
	end := time.Now()
	ctx := e.Ctx
	if ctx == nil {
		ctx = context.Background()
	}
	span, ok := ctx.Value(flushSpanKey{}).(trace.Span)
	if !ok {
		ctx, span = o.startFlush(ctx, e.Batch, e.Reason, e.Members, end.Add(-e.Duration))
	}
	if span.IsRecording() && e.Err != nil {
		recordError(span, e.Err, end)
	}
	span.End(trace.WithTimestamp(end))
	fa := o.batches.get(flushKey{e.Batch, e.Reason})
	o.m.flushes.Add(ctx, 1, fa.add...)
	o.m.flushDuration.Record(ctx, e.Duration.Seconds(), fa.rec...)
	o.m.batchSize.Record(ctx, int64(e.Size), fa.rec...)
}

// recordError marks span failed with err, at time at. A panic is recorded
// as an exception with the panicking goroutine's stack, not the observer's.
func recordError(span trace.Span, err error, at time.Time) {
	if pe := (*statepipe.PanicError)(nil); errors.As(err, &pe) {
		span.RecordError(err, trace.WithTimestamp(at),
			trace.WithAttributes(attribute.String("exception.stacktrace", string(pe.Stack))))
	} else {
		span.RecordError(err, trace.WithTimestamp(at))
	}
	span.SetStatus(codes.Error, err.Error())
}
