// Package jetstream runs one statepipe pipeline across several processes,
// on one machine or many, that share their input through a NATS JetStream
// stream: a durable, replicated log with a per-message ack.
//
// Each process runs the same state machine in its own
// [statepipe.Pipelines] and a [Source] that feeds it from one shared pull
// consumer. JetStream hands each message to one process at a time; a
// process acks a message only once its request has come out of the
// pipeline without error, so a message held by a process that dies is
// redelivered to another. Nothing else is shared: adding a process, on
// any machine that reaches the NATS servers, adds capacity.
//
// Import it under another name, since nats.go's own package is also
// called jetstream:
//
//	import spjs "github.com/statepipe/statepipe/connect/jetstream"
//
// # A process
//
//	nc, _ := nats.Connect(url)
//	js, _ := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(5*time.Second))
//	cons, err := spjs.Setup{ // makes what is missing, checks the rest
//		Work:     jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.new"}, Retention: jetstream.WorkQueuePolicy},
//		Consumer: jetstream.ConsumerConfig{Durable: "checkout", AckWait: 30 * time.Second, MaxDeliver: 5, MaxAckPending: 10_000},
//		Results:  &jetstream.StreamConfig{Name: "DONE", Subjects: []string{"orders.done"}, Duplicates: 10 * time.Minute},
//		ResultSubject: "orders.done",
//		DeadLetters:   &jetstream.StreamConfig{Name: "DEAD", Subjects: []string{"orders.dead"}},
//		DeadLetterSubject: "orders.dead",
//		Processes: 8,
//	}.Apply(ctx, js)
//	p, _ := statepipe.New[Order](NewCheckout())
//	src := &spjs.Source[Order]{
//		Consumer: cons, JetStream: js, Decode: decodeOrder,
//		DeadLetter: "orders.dead",
//		Sink:       &spjs.Sink[Order]{Subject: "orders.done", Encode: encodeOrder},
//	}
//	err = src.Run(ctx, p) // until ctx ends; then it drains
//	p.Close()
//
// [Setup] refuses the layouts that fail quietly later: a work stream that
// captures the dead-letter subject (every dead letter is delivered as work
// again, for ever), a MaxAckPending below processes × MaxInFlight, a
// Duplicates window shorter than a message's redeliveries, an AckWait
// shorter than the longest batch. Run itself refuses a Sink or
// dead-letter subject that no stream, or the work stream, captures.
//
// # Delivery guarantees
//
// At least once. A message is acked after its request left the pipeline
// without error (after every batch it went through) and after the [Sink]
// stored its result; a process that dies before the ack leaves it to be
// redelivered once AckWait has passed. The Source settles each message by
// [connect.Judge]: a retryable failure is naked with a delay that grows
// with the delivery count ([Source.Backoff]); a permanent one
// ([Permanent], a message that does not decode) or a failure on the
// consumer's last delivery (MaxDeliver) is published to a dead-letter
// subject with the reason in headers ([HeaderReason], [HeaderKind]) and
// termed. A message held for a third of AckWait (queued, running, parked
// in a batch, waiting for a publish) is reported in progress, so a slow
// batch is not redelivered while it is being worked on.
//
// The two retry layers combine. A stage error marked [statepipe.Retry]
// is retried in the process, at its stage, under the Pipelines'
// [statepipe.WithRetry]; when those attempts run out the request comes
// out with a [*statepipe.RetryError], which is not permanent, so the
// Source naks the message and the log delivers it again (perhaps to
// another process), up to MaxDeliver. A message may so run its stage up
// to attempts × MaxDeliver times. [Permanent] skips both layers.
//
// Side effects of stages therefore happen at least once: make them
// idempotent, or key them by the message (its stream and sequence, see
// [Message]). The Sink does that for its results: every delivery of a
// message publishes its result with the same Nats-Msg-Id (the stream, its
// creation time, the consumer and the sequence), so the results stream
// keeps one copy, provided its Duplicates window outlasts the
// redeliveries; a stream made again, or a second consumer, gets results
// of its own. The result carries the input's headers (trace context,
// correlation ID), less NATS's own.
//
// Publishes wait for their stream's ack on goroutines of their own, each
// until its own deadline (PublishTimeout after it started) and the
// drain's, so an unanswering results or dead-letter stream neither
// freezes the Source nor delays the in-progress reports, the intake or
// the drain. Give the JetStream a publish timeout as well
// (jetstream.WithPublishAsyncTimeout), or nats.go keeps every unanswered
// publish until its connection closes.
//
// When a process dies while holding a message on its last allowed
// delivery, no process sees it fail; the server announces it on
// $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>. A
// Source with a DeadLetter subject listens there (the processes of a
// consumer share the advisories), dead-letters the message as
// [KindExhausted] and removes it from a work-queue stream, where it would
// otherwise stay for good; [Stats].Exhausted counts them. The advisory is
// not stored: one announced while no Source runs is lost, and its message
// is then the server's to keep (in a work queue: until removed by hand).
//
// # Backpressure
//
// A Source holds at most MaxInFlight messages (fetched and not yet
// settled), clamped to its group's bound, and fetches only when half of
// that is free, so a slow pipeline leaves messages in the stream for
// faster processes instead of hoarding them, and no fetched message waits
// unseen for room. Set the consumer's MaxAckPending to at least
// processes × MaxInFlight.
//
// # Metrics
//
// [Source.Stats] returns the counts every connector reports
// ([connect.SourceStats]: fetched, done, retried, dead-lettered, held,
// the lag: messages the consumer has not delivered yet, as the last
// fetch saw it; and with partitions, each one's lag and held messages),
// and JetStream's own (in-progress reports, advisories). The Source is a
// [connect.Reporter]: contrib/prometheus exports it.
//
// # Shutdown
//
// Cancelling Run's context drains: no more fetching, the requests in
// flight finish and are settled for up to DrainTimeout, publishes
// included, and the messages still held after it are naked for another
// process to take at once. Run then returns nil, and has ended the
// goroutines it started; close the Pipelines after it.
//
// # Per-key ordering across processes
//
// One process keeps the order its group gives (statepipe.Ordered), but
// across processes a shared consumer has no order: JetStream hands the
// next message to whichever process asks, and a redelivery comes after
// later messages. When the messages of one key (an account, a device)
// must be processed in order, partition them ([Partitions]): publish each
// to a subject that carries its partition, such as
// orders.<hash(key) % N>, and give the Source Partitions instead of a
// Consumer. The processes spread the partitions among themselves as they
// join and leave (through a key-value bucket), each partition is pinned
// to one process at a time, its messages are settled in order, and a
// partition's messages may be many in flight at once: with
// statepipe.WithKey on the same key, the side effects of one key run in
// order while different keys run in parallel.
//
// The limits: the throughput of one partition is that of one process; N
// fixes the parallelism, and changing it moves keys between partitions
// (drain first); a partition moving after a process died waits for
// PinnedTTL (at least AckWait); a message that fails for now is delivered
// again after the ones behind it (retry in the process, statepipe.Retry,
// where the order of attempts matters).
//
// # Pointing real machines at a NATS cluster
//
// Nothing in a Source is specific to one machine. To scale out:
//
//  1. Run a NATS cluster with JetStream (three servers for replication; see
//     the NATS documentation, or a managed service).
//  2. Create the streams and the consumer once, replicated and durable,
//     with [Setup] (set Replicas in its stream configs), from one process
//     or a deploy step: it checks the layout as it goes. By hand, keep
//     the results and dead letters out of the work stream's subjects
//     (jobs.new for work, jobs.done and jobs.dead elsewhere, not jobs.>):
//     nats stream add JOBS --subjects 'jobs.new' --retention work --storage file --replicas 3
//     nats consumer add JOBS workers --pull --ack explicit --wait 30s --max-deliver 5 --max-pending 10000
//  3. The results stream needs a Duplicates window longer than
//     MaxDeliver × AckWait plus the backoffs ([Setup.Check] computes it).
//  4. Start the same binary on every machine with the cluster's URLs
//     (nats.Connect("nats://a:4222,nats://b:4222,nats://c:4222"), with
//     credentials and TLS as the cluster requires); each runs a Source on
//     the same consumer. Add or remove machines at any time: stop one with
//     SIGTERM so it drains.
//
// The [github.com/statepipe/statepipe/connect/jetstream/embedded] package starts a single server inside a process, for
// tests, demos and one-machine runs: `statepipe demo --workers 3` uses it.
//
// # Costs
//
// A message costs one fetch share, one context value (to carry the message
// to the stages), one ack and, with a Sink, one asynchronous publish whose
// confirmation is awaited on its own goroutine. BENCHMARKS.md has the
// numbers, against a plain nats.go consumer doing the same work.
package jetstream
