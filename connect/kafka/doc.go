// Package kafka runs one statepipe pipeline across several processes, on
// one machine or many, that share their input through a Kafka consumer
// group: each process runs the same state machine in its own
// [statepipe.Pipelines] and a [Source] that feeds it from the partitions
// the group gives it. Kafka hands each partition to one member at a time
// and moves it to another when its owner leaves or dies; adding a
// process adds capacity, up to one process per partition.
//
// It has the shape of connect/jetstream's Source (Decode, MaxInFlight,
// DeadLetter, Sink, DrainTimeout, Logger, Run(ctx, p)), and judges
// failures by the same rules ([connect.Judge]), so a program moves
// between the two logs by changing its Source, not its machine.
//
// It is built on franz-go (github.com/twmb/franz-go): Opts takes any
// franz-go client option, for TLS, SASL, timeouts or a logger.
//
// # A process
//
//	p, _ := statepipe.New[Order](NewCheckout())
//	src := &kafka.Source[Order]{
//		Brokers: []string{"kafka-1:9092", "kafka-2:9092"},
//		Group:   "checkout", Topics: []string{"orders"},
//		Decode:     decodeOrder,
//		DeadLetter: "orders.dead",
//		Sink:       &kafka.Sink[Order]{Topic: "orders.done", Encode: encodeOrder},
//	}
//	err := src.Run(ctx, p) // until ctx ends; then it drains and commits
//	p.Close()
//
// [EnsureTopics] creates the topics from code (or checks that those that
// exist have the partitions asked for); Run checks that the topics it
// needs exist and says which do not ([ErrNoTopic]).
//
// # Delivery guarantees and commits
//
// At least once. Records of a partition finish in any order: one waits in
// a batch while the ones after it are done. The Source keeps, per
// partition, the records it holds in offset order, and commits (every
// CommitInterval, on revoke, at the end of Run) the offset just above the
// last record below which all are finished: never past a record still in
// the pipeline, parked in a Batcher, waiting for a retry or for its
// result to be acknowledged. A process that dies leaves its partitions to
// be taken over at the last commit, so the records it held, and those it
// finished after its last commit, run again: make side effects
// idempotent, or key them by the record (its topic, partition and offset,
// see [Record]).
//
// Kafka has no per-record redelivery, so the Source runs a record again
// itself after a retryable failure, after [Source.Backoff], up to
// [Source.MaxAttempts]; the offset stays uncommitted meanwhile. Permanent
// failures ([connect.Permanent]), records Decode rejects and the last
// failure of a record whose attempts ran out go to the DeadLetter topic,
// with [connect.HeaderReason], [connect.HeaderKind],
// [connect.HeaderDelivered] and where the record came from
// ([HeaderTopic], [HeaderPartition], [HeaderOffset]); the record is
// committed once Kafka has acknowledged its dead letter. Errors a stage
// marks with [statepipe.Retry] are retried first inside the process,
// under the Pipelines' [statepipe.WithRetry]; when those run out, the
// Source's attempts begin.
//
// # Exactly once
//
// With [Source.TransactionalID] set, the Source works in rounds: it polls
// up to MaxInFlight records, begins a transaction, runs them all through
// the pipeline (in parallel, as usual), produces their results and dead
// letters in the transaction, and commits the transaction together with
// the offsets (franz-go's GroupTransactSession). A process that dies in
// a round leaves a transaction that Kafka aborts (after the producer's
// TransactionTimeout), and its records run again elsewhere; a rebalance
// in a round aborts it too. Readers that read committed records only see
// each result once. The cost: a round waits for its slowest record, and
// each round is a transaction (a few round trips). Side effects outside
// Kafka still happen at least once.
//
// # Backpressure
//
// A Source holds at most MaxInFlight records and MaxBytes of keys and
// values (fetched and not yet finished), and polls only when there is
// room; franz-go then stops fetching too, once its buffer is full. A
// partition that holds MaxPartitionInFlight unfinished records is paused
// (franz-go's PauseFetchPartitions) and the records of it that arrived in
// the same poll are given back (fetched again later), so that a slow or
// stuck partition does not fill the process and stall the others; it
// resumes once half of them are finished. Pausing has a cost, the wait
// for the fetch after the resume, so with MaxPartitionInFlight unset a
// partition is paused only once it is slow (half of MaxInFlight held, the
// oldest for a second), and a partition that keeps up may use all of
// MaxInFlight. In an ordered Source, a stuck partition's records queue
// behind its head; once the process is full, a slow partition gives those
// back. An Unordered Source cannot give back records already in the
// pipeline: if many records of one partition are stuck at once, set
// MaxPartitionInFlight to keep room for the others.
//
// # Order
//
// Unordered (the default) runs a partition's records in parallel.
// [PartitionOrder] runs each partition's records one after another, in
// offset order, partitions in parallel; [KeyOrder] runs the records of
// one record key one after another, keys in parallel. In both, a record's
// retries come before the next record of its lane, and across a rebalance
// or a crash the next owner starts again at the last commit, in order.
// The core's [statepipe.WithKey] on the Pipelines gives per-key order on
// the data instead: an Unordered Source submits each partition's records
// in offset order, and the core runs equal keys one after another (a
// record the Source runs again after a failure then goes after the later
// ones of its key; KeyOrder does not have that gap).
//
// # Rebalances
//
// Assignment is cooperative-sticky by default: a member that joins or
// leaves moves only the partitions that must move. When a partition is
// taken away, the Source stops taking its records, drops those not yet
// submitted or waiting for a retry, lets those in the pipeline (and their
// results) finish for up to RevokeTimeout, commits what finished, and lets
// the rebalance go on; the requests still inside are cancelled, and their
// records run again at the next owner. A member dropped from the group
// (a session timeout) gives up its partitions at once, without a commit.
//
// # Shutdown
//
// Cancelling Run's context drains: no more polls, the records not yet
// submitted or waiting for a retry are dropped, those inside get
// DrainTimeout to finish; then the rest are cancelled, what finished is
// committed, and the member leaves the group, so that its partitions move
// at once. Run returns nil and has ended its goroutines; close the
// Pipelines after it.
//
// # Stats
//
// [Source.Stats] counts what the Source did and reports what it holds and
// the lag of each partition it owns (records after its commit point, by
// the last fetch's high watermark); [Source.SourceStats] is the shared
// [connect.SourceStats], which contrib/prometheus exports.
//
// # Costs
//
// A record costs one poll share, a context value (to carry it to the
// stages), bookkeeping under one mutex at poll and at finish, and, with a
// Sink, one asynchronous produce; commits are one request per
// CommitInterval for all partitions. BENCHMARKS.md compares a Source with
// a plain franz-go consumer loop doing the same work.
package kafka
