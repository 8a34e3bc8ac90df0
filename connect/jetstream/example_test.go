package jetstream_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/statepipe/statepipe"
	spjs "github.com/statepipe/statepipe/connect/jetstream"
	"github.com/statepipe/statepipe/connect/jetstream/embedded"
)

// Square squares numbers; a negative one is a permanent failure.
type Square struct{}

func (Square) Start(r statepipe.Request[int]) statepipe.Request[int] {
	if r.Data < 0 {
		r.Err = spjs.Permanent(fmt.Errorf("%d is negative", r.Data))
		return r
	}
	r.Data *= r.Data
	return r
}

func (Square) Close() {}

// A Source feeds a JetStream consumer into a pipeline, publishes each
// result through its Sink, and dead-letters what fails for good. Every
// process that runs the same code on the same consumer shares the work.
func ExampleSource() {
	dir, _ := os.MkdirTemp("", "statepipe-example")
	defer os.RemoveAll(dir)
	url, shutdown, err := embedded.Start(dir) // in production: your NATS cluster's URL
	if err != nil {
		panic(err)
	}
	defer shutdown()
	nc, _ := nats.Connect(url)
	defer nc.Close()
	// A publish timeout, so that nats.go forgets the publishes no stream answers.
	js, _ := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(5*time.Second))
	ctx := context.Background()

	// Make the streams and the consumer, or check them if they exist:
	// Apply refuses a layout that would loop dead letters, lose results
	// to the de-duplication or starve processes.
	cons, err := spjs.Setup{
		Work:              jetstream.StreamConfig{Name: "NUMBERS", Subjects: []string{"numbers.in"}, Retention: jetstream.WorkQueuePolicy},
		Consumer:          jetstream.ConsumerConfig{Durable: "squarers", AckWait: 30 * time.Second, MaxDeliver: 5, MaxAckPending: 1024},
		Results:           &jetstream.StreamConfig{Name: "SQUARES", Subjects: []string{"squares"}, Duplicates: 10 * time.Minute},
		ResultSubject:     "squares",
		DeadLetters:       &jetstream.StreamConfig{Name: "DEAD", Subjects: []string{"numbers.dead"}},
		DeadLetterSubject: "numbers.dead",
		Processes:         4, // up to 4 processes, each with MaxInFlight 256
	}.Apply(ctx, js)
	if err != nil {
		panic(err)
	}
	for _, n := range []string{"1", "2", "3", "-4", "five"} {
		_, _ = js.Publish(ctx, "numbers.in", []byte(n))
	}

	p, _ := statepipe.New[int](Square{})
	src := &spjs.Source[int]{
		Consumer:   cons,
		JetStream:  js,
		Decode:     func(b []byte) (int, error) { return strconv.Atoi(string(b)) },
		DeadLetter: "numbers.dead",
		Sink: &spjs.Sink[int]{Subject: "squares", Encode: func(n int) ([]byte, error) {
			return []byte(strconv.Itoa(n)), nil
		}},
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- src.Run(runCtx, p) }()
	for src.Stats().Done+src.Stats().DeadLettered < 5 {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		panic(err)
	}
	p.Close()

	fmt.Println("squares:", bodies(js, "SQUARES"))
	fmt.Println("dead letters:", bodies(js, "DEAD"))
	s := src.Stats()
	fmt.Printf("acked %d, dead-lettered %d (%d did not decode)\n", s.Done, s.DeadLettered, s.DecodeFailed)
	// Output:
	// squares: [1 4 9]
	// dead letters: [-4 five]
	// acked 3, dead-lettered 2 (1 did not decode)
}

// bodies returns the bodies of a stream's messages, sorted.
func bodies(js jetstream.JetStream, stream string) []string {
	ctx := context.Background()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		panic(err)
	}
	c, _ := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	var out []string
	for range s.CachedInfo().State.Msgs {
		m, err := c.Next()
		if err != nil {
			panic(errors.Join(errors.New(stream), err))
		}
		out = append(out, string(m.Data()))
	}
	slices.Sort(out)
	return out
}
