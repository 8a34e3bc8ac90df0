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
//	js, _ := jetstream.New(nc)
//	cons, _ := js.CreateOrUpdateConsumer(ctx, "ORDERS", jetstream.ConsumerConfig{
//		Durable: "checkout", AckPolicy: jetstream.AckExplicitPolicy,
//		AckWait: 30 * time.Second, MaxDeliver: 5, MaxAckPending: 10_000,
//	})
//	p, _ := statepipe.New[Order](NewCheckout())
//	src := &spjs.Source[Order]{
//		Consumer: cons, JetStream: js, Decode: decodeOrder,
//		DeadLetter: "orders.dead",
//		Sink:       &spjs.Sink[Order]{Subject: "orders.done", Encode: encodeOrder},
//	}
//	err := src.Run(ctx, p) // until ctx ends; then it drains
//	p.Close()
//
// # Delivery guarantees
//
// At least once. A message is acked after its request left the pipeline
// without error (after every batch it went through) and after the [Sink]
// stored its result; a process that dies before the ack leaves it to be
// redelivered once AckWait has passed. A retryable failure is naked with a
// delay that grows with the delivery count ([Source.Backoff]); a permanent
// one ([Permanent], a message that does not decode, or any failure on the
// consumer's last delivery, MaxDeliver) is published to a dead-letter
// subject with the reason in headers ([HeaderReason], [HeaderKind]) and
// termed. A message held for a third of AckWait (queued, running, parked
// in a batch) is reported in progress, so a slow batch is not redelivered
// while it is being worked on.
//
// Side effects of stages therefore happen at least once: make them
// idempotent, or key them by the message (its stream and sequence, see
// [Message]). The Sink does that for its results: every delivery of a
// message publishes its result with the same Nats-Msg-Id, so the results
// stream keeps one copy, provided its Duplicates window outlasts the
// redeliveries (AckWait times MaxDeliver, plus the backoff).
//
// What JetStream does not do for you: when a process dies while holding a
// message on its last allowed delivery, the server does not redeliver it
// and no process sees it fail; the server publishes an advisory on
// $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer> instead.
// Watch that subject, or leave MaxDeliver unlimited (-1) and let the
// Source's own count of failures ([Source.Backoff] grows the delay) decide.
//
// # Backpressure
//
// A Source holds at most MaxInFlight messages (fetched and not yet
// settled) and fetches only when half of that is free, so a slow pipeline
// leaves messages in the stream for faster processes instead of hoarding
// them. Submit blocking on a full group is the rest of the backpressure.
// Set the consumer's MaxAckPending to at least processes × MaxInFlight.
//
// # Shutdown
//
// Cancelling Run's context drains: no more fetching, the requests in
// flight finish and are settled for up to DrainTimeout, and the messages
// still held after it are naked for another process to take at once. Run
// then returns nil, and has ended the goroutines it started; close the
// Pipelines after it.
//
// # Per-key ordering across processes
//
// One process keeps the order its group gives (statepipe.Ordered), but
// across processes a shared consumer has no order: JetStream hands the
// next message to whichever process asks, and a redelivery comes after
// later messages. When the messages of one key (an account, a device)
// must be processed in order, partition:
//
//   - Publish each message to a subject that carries its partition, such as
//     orders.<hash(key) % N>, for a fixed N.
//   - Make one consumer per partition (FilterSubject orders.3), with
//     MaxAckPending 1 if a message must not start before the previous one
//     is acked, or larger if the pipeline keeps order itself (an ordered
//     group) and a redelivery may come out of order.
//   - Give each partition to one process at a time: set the consumers'
//     PriorityPolicy to pinned_client with a priority group (JetStream
//     2.11 and later), and run one Source per partition in every process,
//     with [Source.PriorityGroup] set. The server pins each partition to
//     one client and moves it to another when that one stops pulling for
//     PinnedTTL (TestPinnedPartition shows it).
//
// The limits: throughput per key is that of one process; N fixes the
// parallelism, and changing it moves keys between partitions (drain
// first); MaxAckPending 1 costs a round trip per message. Without
// partitions, ordering holds only within a process, and only for messages
// it happens to receive.
//
// # Pointing real machines at a NATS cluster
//
// Nothing in a Source is specific to one machine. To scale out:
//
//  1. Run a NATS cluster with JetStream (three servers for replication; see
//     the NATS documentation, or a managed service).
//  2. Create the stream once, replicated and durable, and a durable pull
//     consumer with explicit acks, an AckWait longer than a normal batch
//     (the Source reports slower ones in progress), a MaxDeliver, and
//     MaxAckPending of at least processes × MaxInFlight:
//     nats stream add JOBS --subjects 'jobs.>' --retention work --storage file --replicas 3
//     nats consumer add JOBS workers --pull --ack explicit --wait 30s --max-deliver 5 --max-pending 10000
//  3. Create the results stream with a Duplicates window longer than
//     MaxDeliver × (AckWait + backoff), and a dead-letter stream.
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
// confirmation is awaited together with the others that came out at the
// same time. On the 2-core CI machine, with the server on the same
// machine, one process moves about 57,000 messages a second through a
// machine that does nothing, and more processes add little there: they
// share the same two cores with the server. Processes add throughput
// where the work waits on something other than this machine's CPU (see
// BenchmarkWorkers).
package jetstream
