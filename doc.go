// Package statepipe runs concurrent, parallel pipelines whose stages are the
// methods of a state machine, with batching anywhere in the machine.
//
// # The model
//
// A state machine is a type whose exported methods with the signature
// func(Request[T]) Request[T] are its stages ([Stage]); Start is the first.
// A stage does its work, sets r.Next to the next stage (or leaves it nil to
// finish) and returns the request. Adding a stage is adding a method, and
// routing is plain code: if r.Data.Big { r.Next = m.review }.
//
// [New] finds the stages once ([Pipelines.Stages]) and starts the workers:
// P pipelines ([WithPipelines], default GOMAXPROCS) of one worker per stage.
// There are no channels between stages: a worker carries one request from
// Start until it finishes, fails, or parks in a [Batcher]. All workers read
// one input queue.
//
// # Groups and output
//
// Callers share one Pipelines through groups ([Pipelines.NewGroup]): each
// group's requests come back only on its own [Group.Out]. [Group.Submit]
// blocks while the group or the Pipelines are full ([WithMaxInFlight],
// [MaxInFlight]), honours its context, and returns [ErrClosed] after
// [Group.Close]. Results leave as they finish, or in submission order for
// ordered groups ([Ordered], [WithOrdered]).
//
// A group's output buffer holds every result it may owe, so workers never
// wait for a consumer, and a consumer that stops reading blocks only its
// own group's Submit. To stop early, cancel the submitting context and
// Close the group: nothing waits for a reader that went away.
//
// # Errors and panics
//
// Every request accepted by Submit comes out exactly once: with Err nil, or
// with the error that stopped it — the error a stage set, its context's
// error (checked before every stage), a [*PanicError] (a panic in a stage,
// a middleware or a flush; the pipelines keep running), a [*CycleError]
// (with [WithDAG]), or a batch error.
//
// # Batching
//
// A stage can hand its request to a [Batcher] instead of finishing it:
//
//	r.Next = m.afterStore // where to resume after the bulk call
//	return m.bulk.Add(r)  // park: the worker is free at once
//
// The batch flushes when it holds [MaxItems] requests or [MaxBytes] of
// data, when [MaxWait] has passed since its first request, when nothing is
// left running that could join it, and when the Pipelines close. One call
// of the flush function serves the whole batch and sets each member's
// Data, Err and Next; each member then resumes at its own Next. [BatchKey]
// keeps one batch per key; [MaxFlushes] bounds concurrent flushes. Parked
// requests count as in flight, so a slow bulk service pushes back on
// Submit.
//
// # Observability
//
// [Pipelines.Stats] counts requests, per-stage runs and errors with latency
// histograms ([Histogram], p50/p90/p99), open groups and batchers
// ([Batcher.Stats]: flushes by reason, fill, parked time).
// [Pipelines.Graph] is the machine as run: its stages and batchers and
// every transition taken, with counts and mean latencies, rendered by
// [Graph.Mermaid] and [Graph.DOT]. [WithObserver] receives every event
// (request start and end, stage runs, park and resume, flushes, panics)
// for tracing and metrics; the contrib modules adapt both to Prometheus
// and OpenTelemetry. [WithLogger] logs start, close and recovered panics,
// never per request.
//
// # Cost
//
// The engine allocates nothing per request. Naming the next stage with a
// method value built in the stage (r.Next = m.Approve) allocates one small
// closure per transition, in user code; make stage values once in the
// constructor (m.approve = m.Approve) and assign those to avoid it (see
// [Stage]). Statistics ([Pipelines.Stats]) are counted per worker and cost
// no atomic operation per request; times are measured on every 8th
// request, since a clock reading costs more than a transition. A Batcher allocates per batch, not per
// request, and watches a member's context only if that context can end.
//
// # Shutdown
//
// [Pipelines.Close] stops intake, closes every group, flushes pending
// batches, lets in-flight requests finish, waits for every goroutine it
// started and then calls the machine's Close. It never waits for
// consumers: results not yet read stay in their group's Out.
package statepipe
