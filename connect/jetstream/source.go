package jetstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/statepipe/statepipe"
	"github.com/statepipe/statepipe/connect"
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
	// Consumer is the pull consumer to read; required unless Partitions
	// is set. Its AckWait sets how often a message being worked on is
	// reported in progress, and its MaxDeliver which delivery is the
	// last attempt. It needs AckPolicy explicit (the default), and a
	// MaxAckPending of at least the number of processes times
	// MaxInFlight, or the processes starve one another ([Setup] checks
	// it).
	Consumer jetstream.Consumer

	// Partitions, instead of Consumer, reads a partitioned stream with
	// per-key order, spreading its partitions over the processes that
	// run a Source on it (see [Partitions]).
	Partitions *Partitions

	// JetStream publishes dead letters and the Sink's results; required.
	// Make it with a publish timeout, jetstream.New(nc,
	// jetstream.WithPublishAsyncTimeout(d)), so that nats.go forgets the
	// publishes no stream answers (see PublishTimeout). Run flushes its
	// connection before returning, so that the last acks reach the
	// server.
	JetStream jetstream.JetStream

	// Decode turns a message body into the request's data; required. An
	// error (or a panic) is permanent: the message is dead-lettered as a
	// [*DecodeError] without entering the pipeline.
	Decode func(data []byte) (T, error)

	// MaxInFlight bounds the messages this process holds: fetched and not
	// yet acked, naked or termed. The Source fetches only when there is
	// room, so a slow pipeline leaves messages in the stream for other
	// processes. It is clamped to the group's bound (the Pipelines'
	// WithMaxInFlight): the Source never fetches a message that the group
	// has no room for. Default 256.
	MaxInFlight int

	// DeadLetter is the subject that receives permanently failed messages
	// (see [Source.Run] for which), with their body, their headers, and
	// headers that tell why ([HeaderReason] and the others). A stream
	// other than the consumer's must capture it: Run checks. The message
	// is termed only once the dead letter is stored. Empty: permanently
	// failed messages are termed with the reason (which the server's
	// advisory carries) and logged.
	DeadLetter string

	// Sink, if set, publishes each successful result before its message
	// is acked.
	Sink *Sink[T]

	// Backoff is the delay before the next delivery after a retryable
	// failure of delivery number delivered (1 for the first). Default
	// Exponential(time.Second, time.Minute).
	Backoff func(delivered uint64) time.Duration

	// DrainTimeout bounds the drain when Run's context ends: how long the
	// requests in flight, and the publishes of their results and dead
	// letters, may take to finish. The messages still held then are
	// naked for redelivery. Default 30s.
	DrainTimeout time.Duration

	// FetchWait is how long one fetch waits for messages when the stream
	// has none. It also bounds how long the drain waits for a fetch under
	// way. Default 1s.
	FetchWait time.Duration

	// PublishTimeout bounds the wait for the stream's ack of each dead
	// letter and each Sink result, counted from its own publish: a
	// result that times out fails like a retryable stage error, a dead
	// letter that times out leaves its message to be delivered again.
	// Default 5s. Give the JetStream's WithPublishAsyncTimeout the same
	// value or more.
	PublishTimeout time.Duration

	// PriorityGroup is the consumer's priority group to pull from, for a
	// consumer with a PriorityPolicy. Empty for a consumer without
	// priority groups. Partitions set their own.
	PriorityGroup string

	// Logger receives what goes wrong with the server (failed fetches,
	// acks and publishes) and every dead letter. Default: discard.
	Logger *slog.Logger

	running  atomic.Bool
	counters counters
	lanes    atomic.Pointer[laneSet]
}

// Headers a dead letter carries besides the original message's own: the
// connect package's, and where the message came from.
const (
	HeaderReason    = connect.HeaderReason    // the error, as text
	HeaderKind      = connect.HeaderKind      // KindDecode, KindPermanent or KindExhausted
	HeaderDelivered = connect.HeaderDelivered // deliveries so far, the failed one included
	HeaderStream    = "Statepipe-Stream"      // the stream the message came from
	HeaderConsumer  = "Statepipe-Consumer"    // the consumer that delivered it
	HeaderSequence  = "Statepipe-Sequence"    // its sequence in the stream
	HeaderSubject   = "Statepipe-Subject"     // the subject it was published to
)

// Why a message was dead-lettered: the values of [HeaderKind].
const (
	KindDecode    = connect.KindDecode    // Decode failed
	KindPermanent = connect.KindPermanent // the request failed with an error matching ErrPermanent
	KindExhausted = connect.KindExhausted // a retryable failure on the consumer's last delivery, or a last delivery lost with its process
)

// deliveryKey is the context key of a request's delivery.
type deliveryKey struct{}

// delivery is one message held by the Source, from fetch to settlement.
type delivery struct {
	msg     jetstream.Msg
	meta    *jetstream.MsgMetadata
	lane    *lane
	size    int
	touched time.Time // fetched, or last reported in progress; guarded by run.mu
	act     *action   // for an ordered lane: how to settle it once those before it are; guarded by lane.mu
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
	backoff      func(uint64) time.Duration
	drainTimeout time.Duration
	fetchWait    time.Duration
	pubTimeout   time.Duration
	log          *slog.Logger

	ackWait       time.Duration
	maxDeliver    int           // <= 0: unlimited
	progressAfter time.Duration // report in progress after holding a message this long
}

// validSubject reports whether s is a subject to publish to.
func validSubject(s string) bool {
	return s != "" && !strings.ContainsAny(s, " \t\r\n*>") && !strings.HasPrefix(s, ".") &&
		!strings.HasSuffix(s, ".") && !strings.Contains(s, "..")
}

func (s *Source[T]) settings() (settings, error) {
	var problems []string
	switch {
	case s.Consumer == nil && s.Partitions == nil:
		problems = append(problems, "nil Consumer")
	case s.Consumer != nil && s.Partitions != nil:
		problems = append(problems, "both Consumer and Partitions set")
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
	if s.DeadLetter != "" && !validSubject(s.DeadLetter) {
		problems = append(problems, fmt.Sprintf("DeadLetter %q is not a subject to publish to", s.DeadLetter))
	}
	if sk := s.Sink; sk != nil && !validSubject(sk.Subject) {
		problems = append(problems, fmt.Sprintf("Sink.Subject %q is not a subject to publish to", sk.Subject))
	}
	if sk := s.Sink; sk != nil && sk.Encode == nil {
		problems = append(problems, "nil Sink.Encode")
	}
	var cfg *jetstream.ConsumerConfig
	if s.Consumer != nil {
		if info := s.Consumer.CachedInfo(); info == nil {
			problems = append(problems, "Consumer has no info")
		} else {
			cfg = &info.Config
		}
	}
	if s.Partitions != nil {
		if err := s.Partitions.validate(); err != nil {
			problems = append(problems, err.Error())
		} else {
			cfg = &s.Partitions.Consumer
		}
	}
	if cfg != nil && cfg.AckPolicy != jetstream.AckExplicitPolicy {
		problems = append(problems, fmt.Sprintf("Consumer has AckPolicy %v; the Source needs explicit acks", cfg.AckPolicy))
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
		ackWait:      cmpOr(cfg.AckWait, 30*time.Second),
		maxDeliver:   cfg.MaxDeliver,
	}
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
// if a field is invalid (wrapping [statepipe.ErrInvalidOption]: among
// others, a Sink.Subject or DeadLetter that no stream captures, or that
// the consumer's own stream captures) or the Source is already running
// ([ErrRunning]); and after a drain if the consumer is deleted or the
// connection closed under it.
//
// Each message is decoded and submitted with a context that carries it
// ([Message]); the Source settles it, by [connect.Judge], when its request
// comes out of the group:
//
//   - Err nil: the Sink (if any) publishes the result and the stream
//     confirms it; then the message is acked. At least once: a process
//     that dies before the ack leaves the message to be redelivered.
//   - Err matching [ErrPermanent], or a message Decode rejects: the
//     message is published to DeadLetter with the reason and termed.
//   - any other error (a *statepipe.PanicError, a *statepipe.RetryError
//     whose in-process attempts ran out): nak with the delay Backoff
//     gives for its delivery count, for a later delivery; on the
//     consumer's last delivery (MaxDeliver), dead-lettered as
//     [KindExhausted] instead.
//
// A message held for a third of the consumer's AckWait, whether queued,
// running, parked in a batch or waiting for a publish, is reported in
// progress, and again every third, so that the server does not redeliver
// it while it is worked on. The reports, the results' publishes, the dead
// letters' publishes and the fetches run on goroutines of their own, so
// none waits behind another.
//
// When ctx ends, Run stops fetching (messages that still arrive from a
// fetch under way are naked at once), closes the group, and settles the
// requests in flight as they come out, for up to DrainTimeout in all,
// publishes included. Then it cancels the contexts of those still inside
// (so that stages and parked requests give up), naks every message it
// still holds so that another process gets it at once, and returns. Every
// goroutine Run started has ended when it returns; requests it abandoned
// at the deadline may still come out of the group later, into nothing.
// p stays open: close it after Run returns.
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
		src:  s,
		c:    c,
		stop: stop,
		fail: stopFetching,
		work: work,
		held: make(map[*delivery]struct{}, c.maxInFlight),
		room: make(chan struct{}, 1),
		quit: make(chan struct{}),
	}
	if err := r.resolve(ctx); err != nil {
		return err
	}
	r.g, c.maxInFlight = newGroup(p, c.maxInFlight)
	r.c = c
	r.results = make(chan *publication, c.maxInFlight)
	r.dead = make(chan deadLetter, c.maxInFlight)

	var helpers sync.WaitGroup
	helpers.Go(func() { r.watchDrain(cancelWork) })
	helpers.Go(r.reportProgress)
	advisories := r.watchAdvisories()
	confirmed := make(chan struct{})
	go func() { defer close(confirmed); r.confirmResults() }()
	lettered := make(chan struct{})
	go func() { defer close(lettered); r.deadLetters() }()
	fetched := r.startFetching()

	r.settleResults()
	close(r.results)
	<-confirmed
	<-fetched
	close(r.dead)
	<-lettered
	r.releaseAll()
	advisories()
	close(r.quit)
	helpers.Wait()
	if err := s.JetStream.Conn().FlushTimeout(c.pubTimeout); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		c.log.Warn("statepipe/jetstream: flushing the last acks", "err", err)
	}
	if err := context.Cause(stop); err != nil && ctx.Err() == nil {
		return err // a fatal error of a fetcher
	}
	return nil
}

// newGroup makes the Source's group and returns it with its bound: want,
// or less if the Pipelines' bound is smaller (NewGroup clamps it). The
// Pipelines do not say their bound, so it is read from the stats of the
// group that appeared; if several did at once, the smallest bound of
// them is taken.
func newGroup[T any](p *statepipe.Pipelines[T], want int) (*statepipe.Group[T], int) {
	before := map[uint64]bool{}
	for _, gs := range p.Stats().Groups {
		before[gs.ID] = true
	}
	g := p.NewGroup(statepipe.MaxInFlight(want))
	limit := want
	for _, gs := range p.Stats().Groups {
		if !before[gs.ID] {
			limit = min(limit, gs.Limit)
		}
	}
	return g, max(limit, 1)
}

// watchDrain cancels the requests' work once the drain has lasted
// DrainTimeout; it returns at that or when the run ends.
func (r *run[T]) watchDrain(cancelWork context.CancelFunc) {
	select {
	case <-r.stop.Done():
	case <-r.quit:
		return
	}
	t := time.NewTimer(r.c.drainTimeout)
	defer t.Stop()
	select {
	case <-t.C:
		cancelWork()
	case <-r.quit:
	}
}

// resolve finds the streams of the run: the consumer's (and when it was
// created, for the message IDs), the one that stores the results and the
// one that stores the dead letters.
func (r *run[T]) resolve(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.c.pubTimeout)
	defer cancel()
	s := r.src
	var work string
	if s.Consumer != nil {
		work = s.Consumer.CachedInfo().Stream
	} else {
		work = s.Partitions.Stream
	}
	st, err := s.JetStream.Stream(ctx, work)
	if err != nil {
		return fmt.Errorf("statepipe/jetstream: the consumer's stream %s: %w", work, err)
	}
	r.stream = st
	r.idPrefix = work + ":" + strconv.FormatInt(st.CachedInfo().Created.UnixNano(), 36) + ":"
	captured := func(field, subject string) (string, error) {
		name, err := s.JetStream.StreamNameBySubject(ctx, subject)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			return "", invalid("no stream captures %s %q: its publishes would never be stored", field, subject)
		case err != nil:
			return "", fmt.Errorf("statepipe/jetstream: the stream of %s %q: %w", field, subject, err)
		case name == work:
			return "", invalid("the consumer's own stream %s captures %s %q: every message published there would be delivered again", work, field, subject)
		}
		return name, nil
	}
	if sk := s.Sink; sk != nil {
		if r.resultStream, err = captured("Sink.Subject", sk.Subject); err != nil {
			return err
		}
	}
	if s.DeadLetter != "" {
		if r.deadStream, err = captured("DeadLetter", s.DeadLetter); err != nil {
			return err
		}
	}
	if p := s.Partitions; p != nil {
		return r.resolvePartitions(ctx, p)
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
	work context.Context // the requests' contexts derive from it; ends at the drain's deadline

	stream       jetstream.Stream // the consumer's
	idPrefix     string           // "STREAM:CREATED:" of the message IDs
	resultStream string           // the stream that captures Sink.Subject
	deadStream   string           // the stream that captures DeadLetter
	parts        *partitions      // with Partitions

	owned atomic.Int64 // lanes fetching now

	mu       sync.Mutex
	held     map[*delivery]struct{} // fetched, not yet settled
	reserved int                    // places fetches under way may fill

	room    chan struct{}     // a message was settled: there may be room to fetch
	results chan *publication // the Sink's publishes, for confirmResults
	dead    chan deadLetter   // dead letters to publish, for deadLetters
	quit    chan struct{}     // closed when everything is settled: the helpers end
}

// msgID names a delivery's message for the Sink's and the dead letter's
// Nats-Msg-Id: the same for every delivery of one message to one
// consumer, and different for another consumer of the stream, or a
// message of an earlier stream of the same name.
func (r *run[T]) msgID(d *delivery) string {
	return r.idPrefix + d.meta.Consumer + ":" + strconv.FormatUint(d.meta.Sequence.Stream, 10)
}

// id names d in logs.
func (d *delivery) id() string {
	return d.meta.Stream + ":" + strconv.FormatUint(d.meta.Sequence.Stream, 10)
}

// Running reports whether Run is running.
func (s *Source[T]) Running() bool { return s.running.Load() }
