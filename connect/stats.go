package connect

// SourceStats are the counts every connector's Source reports, over all
// its runs. A connector's own Stats may add more; these are the ones
// contrib/prometheus exports for any Source ([Reporter]).
type SourceStats struct {
	Fetched      uint64 // messages received from the log
	Redelivered  uint64 // of those, delivered before (to this process or another)
	Done         uint64 // settled as processed: acked or committed
	Retried      uint64 // failed for now and left to the log to deliver again
	DeadLettered uint64 // failed for good and dead-lettered
	DecodeFailed uint64 // of the dead-lettered, rejected by Decode
	Released     uint64 // given back unprocessed (a drain, a lost partition) for another process
	Published    uint64 // results the Sink published and the log confirmed
	Duplicates   uint64 // of those, results the log already had (a redelivered message's)

	Held      int   // messages held now: fetched, not yet settled
	HeldBytes int64 // their bodies' bytes

	// Lag is the messages in the log that this Source's consumer has not
	// yet processed: JetStream's pending count, or the sum of the
	// partitions' lags. -1 when not known yet.
	Lag int64

	// Partitions are the partitions this process owns now, if the log
	// has them, in order of name.
	Partitions []PartitionStats
}

// PartitionStats describe one partition a Source owns.
type PartitionStats struct {
	Name string // "topic/3" for Kafka, the partition's subject for JetStream
	Lag  int64  // messages after the last one settled; -1 when not known yet
	Held int    // messages of the partition held now
}

// Reporter is any Source that reports [SourceStats]; contrib/prometheus
// exports them.
type Reporter interface {
	SourceStats() SourceStats
}
