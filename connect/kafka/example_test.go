package kafka_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/statepipe/statepipe"
	"github.com/statepipe/statepipe/connect/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// doubler is a one-stage state machine.
type doubler struct{}

func (doubler) Start(r statepipe.Request[int]) statepipe.Request[int] {
	r.Data *= 2
	return r
}

func (doubler) Close() {}

// A Source on an in-process cluster: the records of a three-partition
// topic go through the machine, their results to another topic, and the
// one that does not decode to the dead-letter topic.
func Example() {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		panic(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("amounts"))
	if err != nil {
		panic(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if err := kafka.EnsureTopics(ctx, kadm.NewClient(cl),
		kafka.Topic{Name: "amounts", Partitions: 3},
		kafka.Topic{Name: "doubled", Partitions: 1},
		kafka.Topic{Name: "amounts.dead", Partitions: 1},
	); err != nil {
		panic(err)
	}
	for _, v := range []string{"1", "2", "3", "four", "5"} {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
			panic(err)
		}
	}

	p, err := statepipe.New[int](doubler{})
	if err != nil {
		panic(err)
	}
	defer p.Close()
	src := &kafka.Source[int]{
		Brokers: brokers, Group: "doublers", Topics: []string{"amounts"},
		Decode:     func(b []byte) (int, error) { return strconv.Atoi(string(b)) },
		DeadLetter: "amounts.dead",
		Sink: &kafka.Sink[int]{Topic: "doubled", Encode: func(v int) ([]byte, error) {
			return []byte(strconv.Itoa(v)), nil
		}},
	}
	run, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- src.Run(run, p) }()
	for src.Stats().Done < 5 {
		time.Sleep(10 * time.Millisecond)
	}
	stop() // drain, commit, leave the group
	if err := <-done; err != nil {
		panic(err)
	}
	st := src.Stats()
	fmt.Printf("done %d, dead-lettered %d\n", st.Done, st.DeadLettered)

	var doubled []int
	rd, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("doubled", "amounts.dead"))
	if err != nil {
		panic(err)
	}
	defer rd.Close()
	for got := 0; got < 5; {
		rd.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			got++
			if r.Topic == "amounts.dead" {
				for _, h := range r.Headers {
					if h.Key == "Statepipe-Kind" {
						fmt.Printf("dead letter %q: %s\n", r.Value, h.Value)
					}
				}
				return
			}
			v, _ := strconv.Atoi(string(r.Value))
			doubled = append(doubled, v)
		})
	}
	slices.Sort(doubled)
	fmt.Println("doubled:", doubled)
	// Output:
	// done 5, dead-lettered 1
	// dead letter "four": decode
	// doubled: [2 4 6 10]
}
