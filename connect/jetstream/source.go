package jetstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/statepipe/statepipe"
)

// Source feeds the messages of a JetStream pull consumer into a statepipe
// [statepipe.Group] and settles each message by what became of its request:
// ack, nak with a delay, or dead-letter and term. Set the fields, then call
// [Source.Run]. A Source must not be copied after first use.
//
// Several processes, on several machines, may each run a Source on the
// same durable consumer: JetStream hands each message to one of them at a
// time, and redelivers it to another if the one holding it dies.
type Source[T any] struct {
	// Consumer is the pull consumer to read; required. Its AckWait sets
	// how often a message being worked on is reported in progress, and
	// its MaxDeliver which delivery is the last attempt. It needs
	// AckPolicy explicit (the default), and a MaxAckPending of at least
	// the number of processes times MaxInFlight, or the processes starve
	// one another.
	Consumer jetstream.Consumer

	// JetStream publishes dead letters and the Sink's results; required.
	// Run flushes its connection before returning, so that the last acks
	// reach the server.
	JetStream jetstream.JetStream

	// Decode turns a message body into the request's data; required. An
	// error (or a panic) is permanent: the message is dead-lettered as a
	// [*DecodeError] without entering the pipeline.
	Decode func(data []byte) (T, error)

	// MaxInFlight bounds the messages this process holds: fetched and not
	// yet acked, naked or termed. The Source fetches only when there is
	// room, so a slow pipeline leaves messages in the stream for other
	// processes. Default 256.
	MaxInFlight int

	// DeadLetter is the subject that receives permanently failed messages
	// (see [Source.Run] for which), with their body, their headers, and
	// headers that tell why ([HeaderReason] and the others). It should be
	// captured by a stream: the message is termed only once the dead
	// letter is stored. Empty: permanently failed messages are termed with
	// the reason (which the server's advisory carries) and logged.
	DeadLetter string

	// Sink, if set, publishes each successful result before its message
	// is acked.
	Sink *Sink[T]

	// Backoff is the delay before the next delivery after a retryable
	// failure of delivery number delivered (1 for the first). Default
	// Exponential(time.Second, time.Minute).
	Backoff func(delivered uint64) time.Duration

	// DrainTimeout bounds the drain when Run's context ends: how long the
	// requests in flight may take to finish. Those still inside then are
	// naked for redelivery. Default 30s.
	DrainTimeout time.Duration

	// FetchWait is how long one fetch waits for messages when the stream
	// has none. It also bounds how long the drain waits for a fetch under
	// way. Default 1s.
	FetchWait time.Duration

	// PublishTimeout bounds the wait for the stream's ack of a dead
	// letter or a Sink result; a result that times out is retried like a
	// failure. Default 5s.
	PublishTimeout time.Duration

	// PriorityGroup is the consumer's priority group to pull from, for a
	// consumer with a PriorityPolicy: with pinned_client, the server
	// gives all its messages to one Source at a time and moves them to
	// another when that one stops pulling (see the package doc on
	// ordering). Empty for a consumer without priority groups.
	PriorityGroup string

	// Logger receives what goes wrong with the server (failed fetches,
	// acks and publishes) and every dead letter. Default: discard.
	Logger *slog.Logger

	running  atomic.Bool
	counters counters
}

// Headers a dead letter carries besides the original message's own.
const (
	HeaderReason    = "Statepipe-Reason"    // the error, as text
	HeaderKind      = "Statepipe-Kind"      // KindDecode, KindPermanent or KindMaxDeliver
	HeaderStream    = "Statepipe-Stream"    // the stream the message came from
	HeaderConsumer  = "Statepipe-Consumer"  // the consumer that delivered it
	HeaderSequence  = "Statepipe-Sequence"  // its sequence in the stream
	HeaderSubject   = "Statepipe-Subject"   // the subject it was published to
	HeaderDelivered = "Statepipe-Delivered" // deliveries so far, this one included
)

// Why a message was dead-lettered: the values of [HeaderKind].
const (
	KindDecode     = "decode"      // Decode failed
	KindPermanent  = "permanent"   // the request failed with an error matching ErrPermanent
	KindMaxDeliver = "max-deliver" // a retryable failure on the consumer's last delivery
)

// deliveryKey is the context key of a request's delivery.
type deliveryKey struct{}

// delivery is one message held by the Source, from fetch to settlement.
type delivery struct {
	msg     jetstream.Msg
	meta    *jetstream.MsgMetadata
	touched time.Time // fetched, or last reported in progress; guarded by run.mu
}

// id names the message in its stream: the Sink's and the dead letter's
// message ID, the same for every delivery of it.
func (d *delivery) id() string {
	return fmt.Sprintf("%s:%d", d.meta.Stream, d.meta.Sequence.Stream)
}

// Message returns the JetStream message a request was decoded from, for
// a stage to read its subject, headers or metadata (Metadata().NumDelivered
// is the delivery attempt); nil if ctx is not a request's context from a
// Source. The Source acks, naks and terms the message: a stage must not.
func Message(ctx context.Context) jetstream.Msg {
	if d, ok := ctx.Value(deliveryKey{}).(*delivery); ok {
		return d.msg
	}
	return nil
}

func deliveryOf(ctx context.Context) *delivery {
	d, _ := ctx.Value(deliveryKey{}).(*delivery)
	return d
}

// settings are a Source's fields with the defaults filled in.
type settings struct {
	maxInFlight  int
	lowWater     int // fetch once this much room is free (or nothing is held)
	backoff      func(uint64) time.Duration
	drainTimeout time.Duration
	fetchWait    time.Duration
	pubTimeout   time.Duration
	log          *slog.Logger

	ackWait       time.Duration
	maxDeliver    int           // <= 0: unlimited
	progressAfter time.Duration // report in progress after holding a message this long
}

func (s *Source[T]) settings() (settings, error) {
	var problems []string
	if s.Consumer == nil {
		problems = append(problems, "nil Consumer")
	}
	if s.JetStream == nil {
		problems = append(problems, "nil JetStream")
	}
	if s.Decode == nil {
		problems = append(problems, "nil Decode")
	}
	if s.MaxInFlight < 0 {
		problems = append(problems, "MaxInFlight must not be negative")
	}
	if s.DrainTimeout < 0 || s.FetchWait < 0 || s.PublishTimeout < 0 {
		problems = append(problems, "DrainTimeout, FetchWait and PublishTimeout must not be negative")
	}
	if strings.ContainsAny(s.DeadLetter, " \t\r\n*>") {
		problems = append(problems, fmt.Sprintf("DeadLetter %q is not a subject to publish to", s.DeadLetter))
	}
	if sk := s.Sink; sk != nil && (sk.Subject == "" || strings.ContainsAny(sk.Subject, " \t\r\n*>")) {
		problems = append(problems, fmt.Sprintf("Sink.Subject %q is not a subject to publish to", sk.Subject))
	}
	if sk := s.Sink; sk != nil && sk.Encode == nil {
		problems = append(problems, "nil Sink.Encode")
	}
	var info *jetstream.ConsumerInfo
	if s.Consumer != nil {
		if info = s.Consumer.CachedInfo(); info == nil {
			problems = append(problems, "Consumer has no info")
		} else if info.Config.AckPolicy != jetstream.AckExplicitPolicy {
			problems = append(problems, fmt.Sprintf("Consumer has AckPolicy %v; the Source needs explicit acks", info.Config.AckPolicy))
		}
	}
	if len(problems) > 0 {
		return settings{}, invalid("%s", strings.Join(problems, "; "))
	}
	c := settings{
		maxInFlight:  cmpOr(s.MaxInFlight, 256),
		backoff:      s.Backoff,
		drainTimeout: cmpOr(s.DrainTimeout, 30*time.Second),
		fetchWait:    cmpOr(s.FetchWait, time.Second),
		pubTimeout:   cmpOr(s.PublishTimeout, 5*time.Second),
		log:          s.Logger,
		ackWait:      cmpOr(info.Config.AckWait, 30*time.Second),
		maxDeliver:   info.Config.MaxDeliver,
	}
	c.lowWater = max(1, c.maxInFlight/2)
	if c.backoff == nil {
		c.backoff = Exponential(time.Second, time.Minute)
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	// A third of AckWait leaves two reports' worth of margin before the
	// server would redeliver.
	c.progressAfter = c.ackWait / 3
	return c, nil
}

func cmpOr[N int | time.Duration](v, def N) N {
	if v == 0 {
		return def
	}
	return v
}

// Run reads the consumer into a new group of p until ctx ends, then
// drains and returns nil. It returns an error at once, starting nothing,
// if a field is invalid (wrapping [statepipe.ErrInvalidOption]) or the
// Source is already running ([ErrRunning]); and after a drain if the
// consumer is deleted or the connection closed under it.
//
// Each message is decoded and submitted with a context that carries it
// ([Message]); the Source settles it when its request comes out of the
// group:
//
//   - Err nil: the Sink (if any) publishes the result and the stream
//     confirms it; then the message is acked. At least once: a process
//     that dies before the ack leaves the message to be redelivered.
//   - Err matching [ErrPermanent], a message Decode rejects, or any other
//     error on the consumer's last delivery (MaxDeliver): the message is
//     published to DeadLetter with the reason and termed.
//   - any other error (a *statepipe.PanicError included): nak with the
//     delay Backoff gives for its delivery count, for a later retry.
//
// A message held for a third of the consumer's AckWait, whether queued,
// running, parked in a batch or waiting for the Sink, is reported in
// progress, and again every third, so that the server does not redeliver
// it while it is worked on.
//
// When ctx ends, Run stops fetching (messages that still arrive from a
// fetch under way are naked at once), closes the group, and settles the
// requests in flight as they come out, for up to DrainTimeout. Then it
// cancels the contexts of those still inside (so that stages and parked
// requests give up), naks every message it still holds so that another
// process gets it at once, and returns. Run owns two goroutines, its own
// and the fetcher's, and both have ended when it returns; requests it
// abandoned at the deadline may still come out of the group later, into
// nothing. p stays open: close it after Run returns.
func (s *Source[T]) Run(ctx context.Context, p *statepipe.Pipelines[T]) error {
	c, err := s.settings()
	if err != nil {
		return err
	}
	if p == nil {
		return invalid("nil Pipelines")
	}
	if !s.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer s.running.Store(false)

	stop, stopFetching := context.WithCancelCause(ctx)
	defer stopFetching(nil)
	// Requests live in work, not in ctx: the end of ctx starts the drain,
	// the end of work is the drain's deadline.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	r := &run[T]{
		src:      s,
		c:        c,
		g:        p.NewGroup(statepipe.MaxInFlight(c.maxInFlight)),
		stop:     stop,
		fail:     stopFetching,
		work:     work,
		held:     make(map[*delivery]struct{}, c.maxInFlight),
		room:     make(chan struct{}, 1),
		fetching: make(chan struct{}),
	}
	go r.fetch()
	r.settleResults(cancelWork)
	<-r.fetching
	r.releaseAll()
	if err := s.JetStream.Conn().FlushTimeout(c.pubTimeout); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		c.log.Warn("statepipe/jetstream: flushing the last acks", "err", err)
	}
	if err := context.Cause(stop); err != nil && ctx.Err() == nil {
		return err // a fatal error of the fetcher
	}
	return nil
}

// run is one Run of a Source.
type run[T any] struct {
	src  *Source[T]
	c    settings
	g    *statepipe.Group[T]
	stop context.Context // ends when fetching must stop: Run's ctx, or a fatal error
	fail context.CancelCauseFunc
	work context.Context // the requests' contexts derive from it

	mu   sync.Mutex
	held map[*delivery]struct{} // fetched, not yet settled

	room     chan struct{} // a message was settled: there may be room to fetch
	fetching chan struct{} // closed when the fetcher has ended
}
