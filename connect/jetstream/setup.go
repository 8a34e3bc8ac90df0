package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Setup describes the streams and the consumer of a job run by Sources:
// [Setup.Apply] makes what is missing and checks all of it, so that a
// mistake in the layout fails at once with an error that says what to
// change, instead of looping dead letters, losing results to the
// de-duplication or starving processes.
type Setup struct {
	// Work is the stream the messages come from; Name and Subjects are
	// required.
	Work jetstream.StreamConfig
	// Consumer is the consumer the processes share; Durable is required.
	// AckPolicy must be explicit (the zero value).
	Consumer jetstream.ConsumerConfig

	// Results is the stream of the Sink's results, and ResultSubject the
	// Sink's Subject; both or neither.
	Results       *jetstream.StreamConfig
	ResultSubject string
	// DeadLetters is the stream of the dead letters, and
	// DeadLetterSubject the Source's DeadLetter; both or neither.
	DeadLetters       *jetstream.StreamConfig
	DeadLetterSubject string

	// Processes is how many processes will run a Source on the consumer
	// at most; default 1.
	Processes int
	// MaxInFlight is the Sources' MaxInFlight; default 256, as theirs.
	MaxInFlight int
	// LongestBatch is the longest a message may take through the
	// machine: queued, in its stages and in its slowest batch; 0 if
	// unknown.
	LongestBatch time.Duration
	// Backoff is the Sources' Backoff; default theirs.
	Backoff func(delivered uint64) time.Duration
}

// The server's defaults for fields left zero.
const (
	serverMaxAckPending = 1000
	serverDuplicates    = 2 * time.Minute
	serverAckWait       = 30 * time.Second
)

// Check checks the layout without a server:
//
//   - the work stream captures neither the results' subject nor the dead
//     letters' (or every dead letter would be delivered as work again),
//     and the results and dead-letter streams capture their subjects;
//   - the consumer's MaxAckPending is at least Processes × MaxInFlight,
//     or the processes starve one another;
//   - the results' Duplicates window outlasts every redelivery of a
//     message (MaxDeliver deliveries, each as long as AckWait or the
//     longest batch, and the backoffs between them), or a late
//     redelivery stores its result twice; so MaxDeliver must be set;
//   - AckWait is at least LongestBatch: a longer batch works, since the
//     Source reports its messages in progress, but then every such
//     batch depends on those reports arriving in time.
//
// It returns every problem found, joined.
func (s Setup) Check() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if s.Work.Name == "" || len(s.Work.Subjects) == 0 {
		bad("the work stream needs a Name and Subjects")
	}
	if s.Consumer.Durable == "" {
		bad("the consumer needs a Durable name, for the processes to share it")
	}
	if s.Consumer.AckPolicy != jetstream.AckExplicitPolicy {
		bad("the consumer has AckPolicy %v; a Source needs explicit acks", s.Consumer.AckPolicy)
	}
	out := func(what string, st *jetstream.StreamConfig, subject string) {
		switch {
		case st == nil && subject == "":
			return
		case st == nil || subject == "":
			bad("%s: set both the stream and the subject, or neither", what)
			return
		case !validSubject(subject):
			bad("%s: %q is not a subject to publish to", what, subject)
			return
		}
		for _, f := range s.Work.Subjects {
			if overlap(f, subject) {
				bad("the work stream %s captures %q (by %q), the %s subject: every message published there would be delivered as work again; give it a subject outside %q",
					s.Work.Name, subject, f, what, f)
			}
		}
		if !captures(st.Subjects, subject) {
			bad("the %s stream %s does not capture its subject %q (it has %q)", what, st.Name, subject, st.Subjects)
		}
		if st.Name == s.Work.Name {
			bad("the %s stream is the work stream %s", what, st.Name)
		}
	}
	out("results", s.Results, s.ResultSubject)
	out("dead-letter", s.DeadLetters, s.DeadLetterSubject)

	procs, inFlight := cmpOr(s.Processes, 1), cmpOr(s.MaxInFlight, 256)
	if pending := cmpOr(s.Consumer.MaxAckPending, serverMaxAckPending); pending > 0 && pending < procs*inFlight {
		bad("the consumer's MaxAckPending %d is below Processes × MaxInFlight = %d × %d = %d: raise it, or lower MaxInFlight",
			pending, procs, inFlight, procs*inFlight)
	}
	ackWait := cmpOr(s.Consumer.AckWait, serverAckWait)
	if s.LongestBatch > ackWait {
		bad("the consumer's AckWait %v is shorter than the longest batch %v: raise AckWait", ackWait, s.LongestBatch)
	}
	if s.Results != nil {
		dup := cmpOr(s.Results.Duplicates, serverDuplicates)
		if s.Consumer.MaxDeliver <= 0 {
			bad("the consumer's MaxDeliver is unlimited: no Duplicates window of the results stream covers every redelivery; set MaxDeliver")
		} else if span := s.redeliverySpan(ackWait); dup < span {
			bad("the results stream %s keeps message IDs for %v (Duplicates), but a message may be redelivered for %v "+
				"(MaxDeliver %d × max(AckWait, LongestBatch) + the backoffs): raise Duplicates to at least %v",
				s.Results.Name, dup, span, s.Consumer.MaxDeliver, span)
		}
	}
	return errors.Join(errs...)
}

// redeliverySpan is the longest time from a message's first delivery to
// the end of its last.
func (s Setup) redeliverySpan(ackWait time.Duration) time.Duration {
	backoff := s.Backoff
	if backoff == nil {
		backoff = Exponential(time.Second, time.Minute)
	}
	n := s.Consumer.MaxDeliver
	span := time.Duration(n) * max(ackWait, s.LongestBatch)
	for d := 1; d < n; d++ {
		span += backoff(uint64(d))
	}
	return span
}

// Apply makes the streams and the consumer that do not exist, and checks
// ([Setup.Check]) the layout, as wanted and then as the server has it:
// an existing stream or consumer is checked as it is, not changed. It
// returns the consumer, for [Source.Consumer].
func (s Setup) Apply(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error) {
	if err := s.Check(); err != nil {
		return nil, fmt.Errorf("statepipe/jetstream: setup: %w", err)
	}
	ensure := func(cfg *jetstream.StreamConfig) error {
		if cfg == nil {
			return nil
		}
		st, err := js.Stream(ctx, cfg.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			st, err = js.CreateStream(ctx, *cfg)
		}
		if err != nil {
			return fmt.Errorf("statepipe/jetstream: setup: stream %s: %w", cfg.Name, err)
		}
		*cfg = st.CachedInfo().Config
		return nil
	}
	have := s
	have.Work = s.Work
	if s.Results != nil {
		r := *s.Results
		have.Results = &r
	}
	if s.DeadLetters != nil {
		d := *s.DeadLetters
		have.DeadLetters = &d
	}
	for _, cfg := range []*jetstream.StreamConfig{&have.Work, have.Results, have.DeadLetters} {
		if err := ensure(cfg); err != nil {
			return nil, err
		}
	}
	cons, err := js.Consumer(ctx, s.Work.Name, s.Consumer.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		cons, err = js.CreateConsumer(ctx, s.Work.Name, s.Consumer)
	}
	if err != nil {
		return nil, fmt.Errorf("statepipe/jetstream: setup: consumer %s: %w", s.Consumer.Durable, err)
	}
	have.Consumer = cons.CachedInfo().Config
	if err := have.Check(); err != nil {
		return nil, fmt.Errorf("statepipe/jetstream: setup: as the server has it: %w", err)
	}
	return cons, nil
}

// overlap reports whether two subject filters match a subject in common.
func overlap(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(at) && i < len(bt); i++ {
		switch {
		case at[i] == ">" || bt[i] == ">":
			return true
		case at[i] == "*" || bt[i] == "*" || at[i] == bt[i]:
		default:
			return false
		}
	}
	return len(at) == len(bt)
}

// captures reports whether one of filters matches subject.
func captures(filters []string, subject string) bool {
	for _, f := range filters {
		if overlap(f, subject) {
			return true
		}
	}
	return false
}
