package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// runPlain is the benchmarks' baseline: the loop a franz-go user writes
// by hand for the same work, at least once. It polls, decodes each
// record, does the work of the tests' machine (the CPU rounds, and one
// sleep per MaxItems records for the bulk call), produces the results,
// waits for their acks, and commits what it polled; one poll at a time.
func runPlain(ctx context.Context, spec workerSpec, out io.Writer) error {
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(spec.Addrs...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(jobsTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(),
		kgo.Balancers(kgo.CooperativeStickyBalancer()), kgo.BlockRebalanceOnPoll(),
	}, groupTimeouts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	fmt.Fprintln(out, "ready")
	for ctx.Err() == nil {
		fs := cl.PollRecords(ctx, spec.MaxInFlight)
		if err := fs.Err(); err != nil && !errors.Is(err, context.Canceled) {
			cl.AllowRebalance()
			return err
		}
		recs := fs.Records()
		for i, rec := range recs {
			j, err := decodeJob(rec.Value)
			if err != nil {
				continue
			}
			j.Partition, j.Offset, j.Worker, j.Attempt = rec.Partition, rec.Offset, spec.Name, 1
			if spec.Work > 0 {
				burn(j.ID, spec.Work)
			}
			if spec.FlushSleep > 0 && (i+1)%max(1, spec.MaxItems) == 0 {
				time.Sleep(spec.FlushSleep)
			}
			body, _ := encodeJob(j)
			cl.Produce(ctx, &kgo.Record{Topic: resultsTopic, Key: rec.Key, Value: body}, nil)
		}
		if spec.FlushSleep > 0 && len(recs)%max(1, spec.MaxItems) != 0 {
			time.Sleep(spec.FlushSleep) // the last, partial bulk call
		}
		if err := cl.Flush(ctx); err != nil {
			cl.AllowRebalance()
			break
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil && ctx.Err() == nil {
			cl.AllowRebalance()
			return err
		}
		cl.AllowRebalance()
	}
	fmt.Fprintln(out, "stats {}")
	return nil
}
