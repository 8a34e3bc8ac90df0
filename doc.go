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
// one input queue. For stages that wait on the network, [WithAutoscale]
// lets the worker count follow the work instead: it grows while requests
// wait for a worker and more workers finish more, and shrinks while they
// idle.
//
// # Calling it
//
// [Pipelines.Do] is one call: it runs its items through the machine and
// returns every result in order. It is the way to call statepipe from a
// request handler; it never hangs, whatever the number of items.
//
// For a stream, callers share one Pipelines through groups
// ([Pipelines.NewGroup]): each group's requests come back only on its own
// [Group.Out]. [Group.Submit] blocks while the group or the Pipelines are
// full ([WithMaxInFlight], [MaxInFlight]), honours its context, and returns
// [ErrClosed] after [Group.Close]. Results leave as they finish, or in
// submission order for ordered groups ([Ordered], [WithOrdered]). Submit and
// read concurrently: submitting everything first and then reading Out waits
// for ever once the bound is reached.
//
// # What a group costs
//
// A group costs what it holds, not its bound: about 2 KiB and a few
// allocations when made (Do: under 1 KiB). Out's channel buffers up to 16
// results; a group with a larger bound keeps the rest behind it, in memory
// that grows with them, moved into Out by a goroutine of the group while
// there are any. A blocked Submit costs no CPU: it wakes when its group's
// consumer makes room. A consumer that stops reading a large group early
// calls [Group.Discard], so that nothing waits for it; a consumer that
// stops reading only blocks its own group's Submit.
//
// # Errors and panics
//
// Every request accepted by Submit comes out exactly once: with Err nil, or
// with the error that stopped it — the error a stage set, its context's
// error (checked before every stage), a [*PanicError] (a panic in a stage,
// a middleware or a flush; the pipelines keep running), a [*CycleError]
// (with [WithDAG]), or a batch error. Bad configuration, of the options or
// of the machine's batchers, fails New with an error wrapping
// [ErrInvalidOption].
//
// # Batching
//
// A stage can hand its request to a [Batcher] instead of finishing it:
//
//	r.Next = m.afterStore // where to resume after the bulk call
//	return m.bulk.Add(r)  // park: the worker is free at once
//
// A batch is due when [MaxWait] has passed since its first request, when
// nothing is left running that could join it, and when the Pipelines
// close; it flushes as soon as one of [MaxFlushes] slots is free, and
// takes new requests until then, so requests that arrive while the bulk
// calls are busy gather into the next batch. A batch full at [MaxItems] or
// [MaxBytes] flushes when a slot is free. One call of the flush function
// serves the whole batch and sets each member's Data, Err and Next; each
// member then resumes at its own Next. [BatchKey] keeps one batch per key.
//
// Parked requests count as in flight, so a slow bulk service pushes back
// on Submit, and the Pipelines need room for MaxItems x MaxFlushes parked
// requests per batcher: the default bound leaves it for every batcher New
// finds in the machine.
//
// A request/response caller pays for batching only what it waits for: with
// the engine idle, its request's batch is due at once, and with
// MaxFlushes(n), n callers' batches flush at once. MaxWait(0) adds no wait
// of its own and still batches under load; a longer MaxWait makes fuller
// batches from input that trickles in, at that cost in latency.
//
// # Keys and retries
//
// [WithKey] orders requests by a key of their data: a request enters Start
// only once every earlier request with its key has come out, across all
// groups, while different keys run in parallel. A request waiting for its
// key's turn holds no worker; it keeps the key while it runs, parks or
// waits for a retry. A failed request lets its key go on, unless
// [WithKeyFailFast].
//
// A stage that fails with r.Err = [Retry](err) runs again after a backoff
// ([WithRetry], [Backoff]); [RetryAfter] waits at least what a service
// asked for, and [Request.Attempt] counts. A waiting request holds no
// worker and no timer of its own, and leaves at once if its context ends;
// when the attempts run out it fails with a [*RetryError]. In a flush, a
// member whose Err is marked rejoins the same Batcher after its backoff
// (a bulk API's per-item "try again"), and a flush that returns a marked
// error retries every member without an error of its own. Unmarked errors
// are never retried.
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
// and OpenTelemetry. [WithLogger] logs start, close, recovered panics and
// configuration warnings, never per request.
//
// # Cost
//
// The engine allocates nothing per request: a request's bookkeeping lives
// in a pooled record, and the Request a stage gets is its four fields and
// two words. Naming the next stage with a method value built in the stage
// (r.Next = m.Approve) allocates one small closure per transition, in user
// code; make stage values once in the constructor (m.approve = m.Approve)
// and assign those to avoid it (see [Stage]). Each stage call costs one
// atomic operation, by which the engine knows whether a Batcher took the
// request. Statistics ([Pipelines.Stats]) are counted per worker and cost
// no atomic operation per request; times are measured on one request in
// 32, since a clock reading costs more than a transition. A Batcher
// allocates nothing per flush in steady state, and watches a member's
// context only if that context can end.
//
// # Shutdown
//
// [Pipelines.Close] stops intake, closes every group, flushes pending
// batches, lets in-flight requests finish, waits for every goroutine it
// started and then calls the machine's Close. It never waits for
// consumers: results not yet read stay in their group's Out (behind it,
// for a large group, with its goroutine until they are read or the group
// is discarded; see [Group.Out]). Called from a
// stage, a flush or an observer, where it would wait for itself, it
// returns [ErrCloseInStage].
//
// # Checking code
//
// The statepipevet command (module github.com/statepipe/statepipe/analysis)
// finds the pitfalls above before they run: go vet
// -vettool=$(which statepipevet) ./...
package statepipe
