// Package otel traces and measures statepipe pipelines with OpenTelemetry.
//
// Use it if you export traces or metrics through the OpenTelemetry API; for
// a Prometheus /metrics endpoint without OpenTelemetry, use
// contrib/prometheus. Make one [Observer] per Pipelines and pass it to
// [statepipe.WithObserver]:
//
//	obs, err := spotel.NewObserver() // the global providers, or WithTracerProvider, WithMeterProvider
//	...
//	p, err := statepipe.New(m, statepipe.WithObserver(obs))
//
// # Traces
//
// Each request gets a span named [SpanRequest] ("statepipe.request"),
// a child of the span in the context it was submitted with (a new trace if
// there is none). It starts when the request was submitted and ends when it
// leaves the machine for its group's output. Attributes:
// statepipe.request.id and statepipe.group.id ([KeyRequestID],
// [KeyGroupID]), and whatever [WithRequestAttributes] adds.
//
// On the request span, in order:
//
//   - one event per stage run, named after the stage, with
//     statepipe.duration (seconds) and, if the stage failed the request,
//     statepipe.error (the error's message). With [WithStageSpans], each run
//     is a child span named after the stage instead, with attribute
//     statepipe.stage and an error status if it failed the request;
//   - [EventParked] ("statepipe.parked", attribute statepipe.batcher) when
//     a stage hands the request to a batcher, and [EventResumed]
//     ("statepipe.resumed": statepipe.batcher, statepipe.duration parked,
//     statepipe.error if the flush failed it) when it comes back;
//   - [EventRetry] ("statepipe.retry": statepipe.stage or statepipe.batcher,
//     statepipe.attempt, statepipe.duration of the backoff, statepipe.error)
//     when a stage or flush failed it with an error marked by
//     [statepipe.Retry] and it will run again;
//   - if the request failed: an "exception" event (the error's type and
//     message; for a [statepipe.PanicError], the panicking goroutine's stack
//     as exception.stacktrace) and status Error.
//
// Each batch flush gets a span named [SpanFlush] ("statepipe.flush") covering
// the flush call, with attributes statepipe.batcher, statepipe.flush.reason
// (size, bytes, linger, idle or shutdown) and statepipe.batch.size, a link
// to each member's request span, and the exception and Error status if
// flush failed or panicked. It starts a trace of its own (a flush serves
// requests from many traces), and each member's request span gets a link
// back to it. The span starts as the flush begins (the Observer is a
// [statepipe.FlushObserver]) and the flush function's context carries it,
// so spans a traced bulk client starts in flush are its children. An
// Observer wrapped by another that does not forward FlushStarting still
// gets the span, made when the flush ends, with no children. The SDK keeps
// 128 links per span by default (sdktrace.SpanLimits.LinkCountLimit);
// raise it for bigger batches.
//
// # Payloads
//
// No request data reaches a span: the engine's events carry ids, stage and
// batcher names, durations and errors, never Data. To label a request, put
// what you want recorded in the context you submit with and read it back
// with [WithRequestAttributes]; or, inside a stage, annotate your own span:
// trace.SpanFromContext(r.Ctx) is the span the request was submitted under,
// the parent of its statepipe.request span. (Error messages are recorded:
// keep data out of them if it must not be exported.)
//
// # Metrics
//
//	name                        instrument         unit       attributes
//	statepipe.requests          Int64Counter       {request}  statepipe.outcome (ok, error)
//	statepipe.request.duration  Float64Histogram   s          statepipe.outcome
//	statepipe.stage.runs        Int64Counter       {run}      statepipe.stage
//	statepipe.stage.errors      Int64Counter       {error}    statepipe.stage
//	statepipe.stage.duration    Float64Histogram   s          statepipe.stage
//	statepipe.flushes           Int64Counter       {flush}    statepipe.batcher, statepipe.flush.reason
//	statepipe.flush.duration    Float64Histogram   s          statepipe.batcher, statepipe.flush.reason
//	statepipe.batch.size        Int64Histogram     {request}  statepipe.batcher, statepipe.flush.reason
//	statepipe.retries           Int64Counter       {retry}    statepipe.stage, or statepipe.batcher for a flush
//	statepipe.workers           Int64Gauge         {worker}   (with WithAutoscale: the count it set last)
//	statepipe.worker.changes    Int64Counter       {change}   statepipe.scale.reason (up, undo, down)
//
// A request's duration runs from Submit to leaving the machine; a stage's
// is its run time (a stage that parks its request stops at the handoff).
// A stage error is a run that failed its request: an error it set or a
// panic. Measurements are recorded with the request span's context, so an
// SDK that keeps exemplars links them to the trace.
//
// # Cost
//
// Observe runs on the engine's workers, synchronously. Instruments, and
// the attribute sets of each stage, outcome, batcher and flush reason, are
// made once, so recording a measurement allocates nothing: with tracing
// off or not sampled, a stage, park or resume event allocates nothing (a
// test holds this), and a request's start and end together allocate 3 or 4
// times (the context that carries its span, and the options of the
// tracing API). A sampled span costs what the SDK needs: about 4
// allocations per span event, 11 per stage child span, 9 for a request's
// start and end. The spans of requests in flight are kept in a map cut
// into 64 shards, each with its own lock; an entry lives from a request's
// first pick-up to its end, which the engine reports for every request,
// so the map holds at most the Pipelines' in-flight requests.
package otel
