package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/statepipe/statepipe"
	"github.com/statepipe/statepipe/connect"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Source is a member of a Kafka consumer group that feeds the records of
// its partitions into a [statepipe.Group] and commits, per partition, the
// offset below the lowest record not yet finished. Set the fields, then
// call [Source.Run]. A Source must not be copied after first use.
//
// Several processes, on several machines, may each run a Source with the
// same Group: Kafka divides the partitions among them and moves a
// partition to another member when its owner leaves or dies; the new
// owner starts from the last committed offset, so a record is processed
// at least once (or exactly once with [Source.TransactionalID]).
type Source[T any] struct {
	// Brokers are the seed brokers, host:port; required.
	Brokers []string

	// Group is the consumer group's name; required.
	Group string

	// Topics are the topics to consume; required.
	Topics []string

	// Opts are more franz-go options for the client, applied after the
	// Source's own: SASL, TLS, a dialer, a logger, the session timeout,
	// the balancer (cooperative-sticky by default), the reset offset for
	// a group without commits (the start of each partition by default).
	// Options the Source relies on must not be overridden: the consumer
	// group and topics, the callbacks, disabled autocommit and
	// BlockRebalanceOnPoll.
	Opts []kgo.Opt

	// Decode turns a record's value into the request's data; required. An
	// error (or a panic) is permanent: the record is dead-lettered as a
	// [*connect.DecodeError] without entering the pipeline. A stage reads
	// the rest of the record (key, headers) with [Record].
	Decode func(value []byte) (T, error)

	// MaxInFlight bounds the records this process holds: fetched and not
	// yet finished, in the pipeline, queued for their turn, waiting for a
	// retry or for the Sink. Polling stops while it is reached. Default 256.
	MaxInFlight int

	// MaxBytes bounds the bytes (keys and values) of the records held:
	// polling stops while they reach it, so one poll may pass it by at
	// most one fetch. Default 64 MiB.
	MaxBytes int64

	// MaxPartitionInFlight is the number of unfinished records at which
	// fetching of one partition pauses (PauseFetchPartitions), and the
	// records of it that a poll brought beyond it are given back (fetched
	// again later), so that a slow or stuck partition does not fill the
	// process and starve the others; it resumes once half of them are
	// finished. Unset, a partition pauses at half of MaxInFlight, and only
	// once its oldest unfinished record has been held for a second: a
	// partition that keeps up may use all of MaxInFlight, since pausing
	// it would only cost the wait for the fetch after the resume (up to
	// kgo.FetchMaxWait, 500ms unless Opts says otherwise).
	MaxPartitionInFlight int

	// Order says which records run one after another; see [Order].
	// Default Unordered.
	Order Order

	// MaxAttempts is how many times a record runs through the pipeline
	// before a retryable failure is final: the Source runs it again after
	// Backoff (Kafka has no per-record redelivery), and after the last
	// attempt dead-letters it as [connect.KindExhausted]. Default 5.
	MaxAttempts int

	// Backoff is the wait before attempt number attempt+1 after a
	// retryable failure of attempt (1 for the first). Default
	// connect.Exponential(100ms, 10s).
	Backoff func(attempt int) time.Duration

	// DeadLetter is the topic that receives permanently failed records
	// (see [Source.Run]), with their key, value and headers and headers
	// that tell why and where from ([connect.HeaderReason], [HeaderTopic]
	// and the others). A record is committed only once its dead letter is
	// acknowledged. Empty: permanently failed records are logged and
	// committed.
	DeadLetter string

	// Sink, if set, produces each successful result to a topic before its
	// record is committed.
	Sink *Sink[T]

	// TransactionalID, if set, makes the Source exactly-once: results and
	// dead letters are produced, and offsets committed, in Kafka
	// transactions (see the package doc), and each process needs its own
	// ID, stable across its restarts. Readers of the Sink's topic must
	// read committed records only (kgo.FetchIsolationLevel(kgo.ReadCommitted())).
	TransactionalID string

	// CommitInterval is how often finished offsets are committed while
	// the Source runs; they are also committed on revoke and at the end
	// of Run. Default 1s. Not used with TransactionalID.
	CommitInterval time.Duration

	// RevokeTimeout bounds how long the requests of a partition taken
	// away in a rebalance may take to finish before the rebalance goes on
	// without them; it must stay below the group's rebalance timeout
	// (60s by default). Default 10s.
	RevokeTimeout time.Duration

	// DrainTimeout bounds the drain when Run's context ends: how long the
	// requests in flight may take to finish. Default 30s.
	DrainTimeout time.Duration

	// Logger receives what goes wrong (failed commits and produces,
	// rebalances) and every dead letter. Default: discard.
	Logger *slog.Logger

	running  atomic.Bool
	counters counters
	mu       sync.Mutex // guards live
	live     *run[T]
}

// Order is which records of a partition a Source runs one after another.
type Order int

const (
	// Unordered runs the records of a partition in parallel; they finish
	// in any order (the commits stay exact). For per-key order on the
	// data instead, give the Pipelines statepipe.WithKey: the Source
	// submits each partition's records in offset order.
	Unordered Order = iota
	// PartitionOrder runs the records of each partition one after
	// another, in offset order; partitions run in parallel. A record's
	// retries come before the next record.
	PartitionOrder
	// KeyOrder runs the records of a partition that have equal keys (the
	// Kafka record key) one after another, in offset order; different
	// keys run in parallel. Records of one key go to one partition when
	// the producer partitions by key, as Kafka's default partitioner does.
	KeyOrder
)

func (o Order) String() string {
	switch o {
	case Unordered:
		return "unordered"
	case PartitionOrder:
		return "partition"
	case KeyOrder:
		return "key"
	}
	return fmt.Sprintf("Order(%d)", int(o))
}

// Headers a dead letter carries besides the original record's own and the
// shared [connect.HeaderReason], [connect.HeaderKind] and
// [connect.HeaderDelivered]; the Sink's results carry them too, so that a
// reader can tell which record a result is of.
const (
	HeaderTopic     = "Statepipe-Topic"     // the topic the record came from
	HeaderPartition = "Statepipe-Partition" // its partition
	HeaderOffset    = "Statepipe-Offset"    // its offset
)

// ErrRunning is returned by [Source.Run] when the Source is already
// running.
var ErrRunning = errors.New("statepipe/kafka: Source already running")

// settings are a Source's fields with the defaults filled in.
type settings struct {
	maxInFlight    int
	maxBytes       int64
	partitionLimit int
	strictLimit    bool // MaxPartitionInFlight was set
	maxAttempts    int
	backoff        func(int) time.Duration
	commitInterval time.Duration
	revokeTimeout  time.Duration
	drainTimeout   time.Duration
	log            *slog.Logger
	transactional  bool
}

func (s *Source[T]) settings() (settings, error) {
	var problems []string
	if len(s.Brokers) == 0 {
		problems = append(problems, "no Brokers")
	}
	if s.Group == "" {
		problems = append(problems, "no Group")
	}
	if len(s.Topics) == 0 {
		problems = append(problems, "no Topics")
	}
	for _, t := range s.Topics {
		if !validTopic(t) {
			problems = append(problems, fmt.Sprintf("Topics: %q is not a topic name", t))
		}
	}
	if s.Decode == nil {
		problems = append(problems, "nil Decode")
	}
	if s.MaxInFlight < 0 || s.MaxBytes < 0 || s.MaxPartitionInFlight < 0 || s.MaxAttempts < 0 {
		problems = append(problems, "MaxInFlight, MaxBytes, MaxPartitionInFlight and MaxAttempts must not be negative")
	}
	if s.CommitInterval < 0 || s.RevokeTimeout < 0 || s.DrainTimeout < 0 {
		problems = append(problems, "CommitInterval, RevokeTimeout and DrainTimeout must not be negative")
	}
	if s.Order < Unordered || s.Order > KeyOrder {
		problems = append(problems, fmt.Sprintf("unknown %v", s.Order))
	}
	if s.DeadLetter != "" && !validTopic(s.DeadLetter) {
		problems = append(problems, fmt.Sprintf("DeadLetter %q is not a topic name", s.DeadLetter))
	}
	if sk := s.Sink; sk != nil {
		if !validTopic(sk.Topic) {
			problems = append(problems, fmt.Sprintf("Sink.Topic %q is not a topic name", sk.Topic))
		}
		if sk.Encode == nil {
			problems = append(problems, "nil Sink.Encode")
		}
	}
	if len(problems) > 0 {
		return settings{}, invalid("%s", strings.Join(problems, "; "))
	}
	c := settings{
		maxInFlight:    cmpOr(s.MaxInFlight, 256),
		maxBytes:       cmpOr(s.MaxBytes, 64<<20),
		maxAttempts:    cmpOr(s.MaxAttempts, 5),
		backoff:        s.Backoff,
		commitInterval: cmpOr(s.CommitInterval, time.Second),
		revokeTimeout:  cmpOr(s.RevokeTimeout, 10*time.Second),
		drainTimeout:   cmpOr(s.DrainTimeout, 30*time.Second),
		log:            s.Logger,
		transactional:  s.TransactionalID != "",
	}
	c.partitionLimit = cmpOr(s.MaxPartitionInFlight, max(1, c.maxInFlight/2))
	c.strictLimit = s.MaxPartitionInFlight > 0
	if c.backoff == nil {
		c.backoff = connect.Exponential(100*time.Millisecond, 10*time.Second)
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// validTopic reports whether name is a legal Kafka topic name.
func validTopic(name string) bool {
	if name == "" || len(name) > 249 || name == "." || name == ".." {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func cmpOr[N int | int64 | time.Duration](v, def N) N {
	if v == 0 {
		return def
	}
	return v
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: kafka.Source: %s", statepipe.ErrInvalidOption, fmt.Sprintf(format, args...))
}

// recordKey is the context key of a request's delivery.
type recordKey struct{}

// Record returns the Kafka record a request was decoded from, for a
// stage to read its key, headers, partition or offset; nil if ctx is not
// the context of a request from a Source. The record must not be
// modified, and is the request's until it comes out of the group: the
// Source then drops its key, value and headers.
func Record(ctx context.Context) *kgo.Record {
	if d := deliveryOf(ctx); d != nil {
		return d.rec
	}
	return nil
}

// Attempt returns how many times the Source has run the request's record
// through the pipeline, this run included (1 on the first); 0 if ctx is
// not a request's context from a Source.
func Attempt(ctx context.Context) int {
	if d := deliveryOf(ctx); d != nil {
		return d.attempt
	}
	return 0
}

func deliveryOf(ctx context.Context) *delivery {
	if ctx == nil {
		return nil
	}
	d, _ := ctx.Value(recordKey{}).(*delivery)
	return d
}
