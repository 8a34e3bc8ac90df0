package kafka

import "fmt"

// Sink produces the result of each successful request to a topic before
// the [Source] commits its record. The producer is franz-go's idempotent
// one, so a retry inside the client does not write a result twice; a
// record that runs again (after a crash, or a rebalance at the wrong
// moment) produces its result again, unless the Source is transactional
// ([Source.TransactionalID]). Each result has its record's key, so that
// results partition like their records, and the headers [HeaderTopic],
// [HeaderPartition] and [HeaderOffset] naming the record, by which a
// reader can drop a repeated result.
//
// A result Kafka does not acknowledge (within kgo.RecordDeliveryTimeout,
// 30s unless Opts says otherwise) fails its record like a retryable
// stage error; one that Encode rejects (or panics on) fails it
// permanently.
type Sink[T any] struct {
	// Topic receives the results; required.
	Topic string
	// Encode makes a result's value; required.
	Encode func(T) ([]byte, error)
}

func (sk *Sink[T]) encode(v T) (b []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return sk.Encode(v)
}
