package otel

import "go.opentelemetry.io/otel/attribute"

// ScopeName is the instrumentation scope of the tracer and the meter.
const ScopeName = "github.com/statepipe/statepipe/contrib/otel"

// Span and span event names.
const (
	SpanRequest  = "statepipe.request" // one per request, Submit to output
	SpanFlush    = "statepipe.flush"   // one per batch flush, linked to its members
	EventParked  = "statepipe.parked"  // on the request span: handed to a batcher
	EventResumed = "statepipe.resumed" // on the request span: back from a batcher
	EventRetry   = "statepipe.retry"   // on the request span: a stage or flush failed with a marked error, to run again
	// Stage runs are span events (or, with WithStageSpans, child spans)
	// named after the stage.
)

// Metric names.
const (
	MetricRequests        = "statepipe.requests"         // counter {request}: outcome
	MetricRequestDuration = "statepipe.request.duration" // histogram s: outcome
	MetricStageRuns       = "statepipe.stage.runs"       // counter {run}: stage
	MetricStageErrors     = "statepipe.stage.errors"     // counter {error}: stage
	MetricStageDuration   = "statepipe.stage.duration"   // histogram s: stage
	MetricFlushes         = "statepipe.flushes"          // counter {flush}: batcher, reason
	MetricFlushDuration   = "statepipe.flush.duration"   // histogram s: batcher, reason
	MetricBatchSize       = "statepipe.batch.size"       // histogram {request}: batcher, reason
	MetricRetries         = "statepipe.retries"          // counter {retry}: stage, or batcher for a flush
	MetricWorkers         = "statepipe.workers"          // gauge {worker}: the count autoscaling set last
	MetricWorkerChanges   = "statepipe.worker.changes"   // counter {change}: scale reason
)

// Attribute keys.
const (
	KeyRequestID   = attribute.Key("statepipe.request.id")   // int: the request's id within its Pipelines
	KeyGroupID     = attribute.Key("statepipe.group.id")     // int: the id of the request's group
	KeyOutcome     = attribute.Key("statepipe.outcome")      // "ok" or "error"
	KeyStage       = attribute.Key("statepipe.stage")        // a stage's name
	KeyBatcher     = attribute.Key("statepipe.batcher")      // a batcher's name (statepipe.BatchName)
	KeyFlushReason = attribute.Key("statepipe.flush.reason") // size, bytes, linger, idle or shutdown
	KeyBatchSize   = attribute.Key("statepipe.batch.size")   // int: requests in a flush
	KeyDuration    = attribute.Key("statepipe.duration")     // float seconds: a stage run, or time parked
	KeyError       = attribute.Key("statepipe.error")        // an error's message, on stage, resume and retry events
	KeyAttempt     = attribute.Key("statepipe.attempt")      // int: the attempt that failed, on retry events
	KeyScaleReason = attribute.Key("statepipe.scale.reason") // up, undo or down: why autoscaling changed the worker count
)
