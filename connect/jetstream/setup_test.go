package jetstream_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/statepipe/statepipe"
	spjs "github.com/statepipe/statepipe/connect/jetstream"
)

// goodSetup is a layout Check accepts; each case of TestSetupRefuses
// breaks one thing in it.
func goodSetup() spjs.Setup {
	return spjs.Setup{
		Work: jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.new.>"}, Retention: jetstream.WorkQueuePolicy},
		Consumer: jetstream.ConsumerConfig{Durable: "checkout", AckWait: 30 * time.Second, MaxDeliver: 5,
			MaxAckPending: 3 * 256},
		Results:           &jetstream.StreamConfig{Name: "DONE", Subjects: []string{"orders.done"}, Duplicates: 10 * time.Minute},
		ResultSubject:     "orders.done",
		DeadLetters:       &jetstream.StreamConfig{Name: "DEAD", Subjects: []string{"orders.dead"}},
		DeadLetterSubject: "orders.dead",
		Processes:         3,
		LongestBatch:      10 * time.Second,
	}
}

// Finding 3 of issue 13 and the checks beside it: the README's layout (a
// work stream on jobs.> and dead letters on jobs.dead) dead-lettered one
// poison message 21,451 times in 3s. Setup refuses it, and the other
// layouts that lose or starve, with an error that says what to change.
func TestSetupRefuses(t *testing.T) {
	if err := goodSetup().Check(); err != nil {
		t.Fatalf("the good layout: %v", err)
	}
	tests := []struct {
		name   string
		change func(*spjs.Setup)
		want   string
	}{
		{"dead letters in the work stream", func(s *spjs.Setup) {
			s.Work.Subjects = []string{"orders.>"}
		}, `the work stream ORDERS captures "orders.dead" (by "orders.>"), the dead-letter subject`},
		{"results in the work stream", func(s *spjs.Setup) {
			s.Work.Subjects = []string{"orders.*"}
		}, `captures "orders.done" (by "orders.*"), the results subject`},
		{"results stream elsewhere", func(s *spjs.Setup) { s.ResultSubject = "orders.finished" },
			`the results stream DONE does not capture its subject "orders.finished"`},
		{"half a destination", func(s *spjs.Setup) { s.DeadLetters = nil }, "dead-letter: set both"},
		{"starving processes", func(s *spjs.Setup) { s.Consumer.MaxAckPending = 500 },
			"MaxAckPending 500 is below Processes × MaxInFlight = 3 × 256 = 768"},
		{"server default MaxAckPending", func(s *spjs.Setup) { s.Consumer.MaxAckPending = 0; s.Processes = 4 },
			"MaxAckPending 1000 is below"},
		{"short Duplicates", func(s *spjs.Setup) { s.Results.Duplicates = time.Minute },
			"keeps message IDs for 1m0s (Duplicates), but a message may be redelivered for 2m45s"},
		{"server default Duplicates", func(s *spjs.Setup) { s.Results.Duplicates = 0 }, "keeps message IDs for 2m0s"},
		{"unlimited MaxDeliver", func(s *spjs.Setup) { s.Consumer.MaxDeliver = -1 }, "MaxDeliver is unlimited"},
		{"batch longer than AckWait", func(s *spjs.Setup) { s.LongestBatch = time.Minute },
			"AckWait 30s is shorter than the longest batch 1m0s"},
		{"no acks", func(s *spjs.Setup) { s.Consumer.AckPolicy = jetstream.AckNonePolicy }, "explicit acks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := goodSetup()
			r := *s.Results
			s.Results = &r
			tt.change(&s)
			err := s.Check()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check: %v\nwant an error with %q", err, tt.want)
			}
		})
	}
}

// Apply makes what is missing, and checks what exists as the server has
// it: an existing results stream with a short Duplicates window fails.
func TestSetupApply(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := goodSetup()
	cons, err := s.Apply(ctx, e.js)
	if err != nil {
		t.Fatal(err)
	}
	if info := cons.CachedInfo(); info.Stream != "ORDERS" || info.Name != "checkout" || info.Config.MaxDeliver != 5 {
		t.Fatalf("consumer: %+v", info)
	}
	for _, name := range []string{"ORDERS", "DONE", "DEAD"} {
		if _, err := e.js.Stream(ctx, name); err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
	}
	if _, err := s.Apply(ctx, e.js); err != nil {
		t.Fatalf("Apply again: %v", err)
	}

	short := goodSetup()
	short.Results = &jetstream.StreamConfig{Name: "DONE2", Subjects: []string{"orders.done2"}, Duplicates: time.Second}
	short.ResultSubject = "orders.done2"
	if _, err := e.js.CreateStream(ctx, *short.Results); err != nil {
		t.Fatal(err)
	}
	short.Results.Duplicates = time.Hour // what the caller wants, not what the server has
	if _, err := short.Apply(ctx, e.js); err == nil || !strings.Contains(err.Error(), "as the server has it") ||
		!strings.Contains(err.Error(), "keeps message IDs for 1s") {
		t.Fatalf("Apply on a short existing window: %v", err)
	}
}

// Run refuses, starting nothing, a dead-letter or result subject that the
// work stream itself captures, or that no stream does.
func TestRunRefusesUncapturedOrLoopingSubjects(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: "LOOP", Subjects: []string{"loop.>"}}); err != nil {
		t.Fatal(err)
	}
	cons, err := e.js.CreateOrUpdateConsumer(ctx, "LOOP", consumerConfig())
	if err != nil {
		t.Fatal(err)
	}
	p := newPipelines(t, newMachine(10, 0))
	for _, tt := range []struct {
		name string
		src  *spjs.Source[Job]
		want string
	}{
		{"dead letters into work", &spjs.Source[Job]{DeadLetter: "loop.dead"}, "the consumer's own stream LOOP captures DeadLetter"},
		{"results into work", &spjs.Source[Job]{Sink: &spjs.Sink[Job]{Subject: "loop.done", Encode: encodeJob}}, "the consumer's own stream LOOP captures Sink.Subject"},
		{"results nowhere", &spjs.Source[Job]{Sink: &spjs.Sink[Job]{Subject: "nowhere", Encode: encodeJob}}, `no stream captures Sink.Subject "nowhere"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.src.Consumer, tt.src.JetStream, tt.src.Decode = cons, e.js, decodeJob
			err := tt.src.Run(ctx, p)
			if !errors.Is(err, statepipe.ErrInvalidOption) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run: %v, want ErrInvalidOption with %q", err, tt.want)
			}
		})
	}
}
