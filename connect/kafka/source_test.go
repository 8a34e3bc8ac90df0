package kafka_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/statepipe/statepipe"
	spk "github.com/statepipe/statepipe/connect/kafka"
)

func TestEveryRecordProcessedAndCommitted(t *testing.T) {
	addrs, adm := newCluster(t, 4)
	jobs := ids("all", 2000)
	produceJobs(t, addrs, jobs, nil)
	m := newMachine("w", 50, time.Millisecond)
	src := newSource(addrs)
	stop := runSource(t, src, newPipelines(t, m))
	waitFor(t, 30*time.Second, "every record done", func() bool { return src.Stats().Done == uint64(len(jobs)) })
	waitFor(t, 10*time.Second, "no lag in Stats", func() bool { return src.Stats().Lag == 0 })
	st := src.Stats()
	if len(st.Partitions) != 4 {
		t.Errorf("Stats.Partitions = %+v, want the 4 partitions", st.Partitions)
	}
	for _, p := range st.Partitions {
		if p.Lag != 0 || p.Held != 0 {
			t.Errorf("partition %s: lag %d, held %d; want 0, 0", p.Name, p.Lag, p.Held)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if l := lag(t, adm); l != 0 {
		t.Errorf("group lag %d after the run, want 0", l)
	}
	wantEveryResult(t, results(t, addrs, adm), jobs, 1)
	st = src.Stats()
	t.Logf("stats: %+v", st)
	if st.Fetched != uint64(len(jobs)) || st.Published != uint64(len(jobs)) || st.Held != 0 || st.HeldBytes != 0 {
		t.Errorf("stats %+v: want %d fetched and published, nothing held", st, len(jobs))
	}
}

func TestRunRejectsBadSettings(t *testing.T) {
	addrs, _ := newCluster(t, 1)
	p := newPipelines(t, newMachine("w", 10, 0))
	for _, tc := range []struct {
		name string
		edit func(*spk.Source[Job])
	}{
		{"no brokers", func(s *spk.Source[Job]) { s.Brokers = nil }},
		{"no group", func(s *spk.Source[Job]) { s.Group = "" }},
		{"no topics", func(s *spk.Source[Job]) { s.Topics = nil }},
		{"bad topic", func(s *spk.Source[Job]) { s.Topics = []string{"a b"} }},
		{"no decode", func(s *spk.Source[Job]) { s.Decode = nil }},
		{"negative bound", func(s *spk.Source[Job]) { s.MaxInFlight = -1 }},
		{"unknown order", func(s *spk.Source[Job]) { s.Order = 7 }},
		{"sink without encode", func(s *spk.Source[Job]) { s.Sink.Encode = nil }},
		{"bad dead-letter topic", func(s *spk.Source[Job]) { s.DeadLetter = "dl*" }},
	} {
		src := newSource(addrs)
		tc.edit(src)
		if err := src.Run(context.Background(), p); !errors.Is(err, statepipe.ErrInvalidOption) {
			t.Errorf("%s: Run = %v, want ErrInvalidOption", tc.name, err)
		}
	}
	src := newSource(addrs)
	if err := src.Run(context.Background(), nil); !errors.Is(err, statepipe.ErrInvalidOption) {
		t.Errorf("nil Pipelines: Run = %v, want ErrInvalidOption", err)
	}
	src.Topics = []string{jobsTopic, "nowhere"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := src.Run(ctx, p); !errors.Is(err, spk.ErrNoTopic) {
		t.Errorf("missing topic: Run = %v, want ErrNoTopic", err)
	} else {
		t.Logf("missing topic: %v", err)
	}
}

// A record that stays in the pipeline holds back the commits of its
// partition, exactly at its offset, while the records after it finish;
// once it finishes, the commit moves to the end.
func TestSlowRecordHoldsBackItsPartitionsCommit(t *testing.T) {
	addrs, adm := newCluster(t, 2)
	jobs := ids("slow", 400)
	produceJobs(t, addrs, jobs, nil)
	release := make(chan struct{})
	m := newMachine("w", 20, 0)
	var slowOffset int64 = 7
	m.behave = func(r *statepipe.Request[Job]) {
		if rec := spk.Record(r.Ctx); rec.Partition == 0 && rec.Offset == slowOffset {
			<-release
		}
	}
	src := newSource(addrs)
	stop := runSource(t, src, newPipelines(t, m))
	waitFor(t, 30*time.Second, "all but the slow record done", func() bool { return src.Stats().Done == uint64(len(jobs)-1) })
	// Let several commit intervals pass: none may pass the slow record.
	waitFor(t, 10*time.Second, "partition 1 committed to its end", func() bool { return committed(t, adm)[1] == 200 })
	time.Sleep(5 * 50 * time.Millisecond)
	if got := committed(t, adm)[0]; got != slowOffset {
		t.Fatalf("partition 0 committed at %d with offset %d still in the pipeline; want exactly %d", got, slowOffset, slowOffset)
	}
	if st := src.Stats(); st.Held != 1 {
		t.Errorf("Held = %d, want the one slow record", st.Held)
	}
	close(release)
	waitFor(t, 10*time.Second, "partition 0 committed to its end", func() bool { return committed(t, adm)[0] == 200 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if l := lag(t, adm); l != 0 {
		t.Errorf("lag %d, want 0", l)
	}
}
