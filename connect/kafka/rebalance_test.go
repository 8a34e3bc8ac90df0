package kafka_test

import (
	"sync"
	"testing"
	"time"

	"github.com/statepipe/statepipe"
	spk "github.com/statepipe/statepipe/connect/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
)

// watchCommits checks, until stop is closed, that every commit the group
// has made covers only records some machine finished: for each
// partition, every offset below the committed one.
func watchCommits(t *testing.T, adm *kadm.Client, ms []*machine, stop <-chan struct{}) (checks func() int) {
	var mu sync.Mutex
	n := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			for p, at := range committed(t, adm) {
				if o := finishedBelow(ms, p, at); o >= 0 {
					t.Errorf("partition %d committed at %d, but offset %d was not finished", p, at, o)
				}
			}
			mu.Lock()
			n++
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { <-done })
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

// A member joins mid-run and the first one leaves: every record is
// processed, no commit ever passes a record that was not finished, and
// nothing is left as lag.
func TestRebalanceMidRunLosesNothingAndCommitsNothingUnfinished(t *testing.T) {
	addrs, adm := newCluster(t, 6)
	jobs := ids("rb", 3000)
	produceJobs(t, addrs, jobs, nil)
	ma := newMachine("a", 20, 2*time.Millisecond)
	mb := newMachine("b", 20, 2*time.Millisecond)
	stopWatch := make(chan struct{})
	checks := watchCommits(t, adm, []*machine{ma, mb}, stopWatch)

	a, b := newSource(addrs), newSource(addrs)
	a.MaxInFlight, b.MaxInFlight = 64, 64
	stopA := runSource(t, a, newPipelines(t, ma))
	waitFor(t, 30*time.Second, "a quarter done", func() bool { return a.Stats().Done >= 750 })
	stopB := runSource(t, b, newPipelines(t, mb))
	waitFor(t, 30*time.Second, "b given partitions", func() bool { return b.Stats().Assigned > 0 })
	waitFor(t, 30*time.Second, "half done", func() bool { return a.Stats().Done+b.Stats().Done >= 1500 })
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "b owns every partition", func() bool { return len(b.Stats().Partitions) == 6 })
	waitFor(t, 60*time.Second, "every record committed", func() bool { return lag(t, adm) == 0 })
	close(stopWatch)
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	sa, sb := a.Stats(), b.Stats()
	t.Logf("a: %+v", sa)
	t.Logf("b: %+v", sb)
	t.Logf("%d commit checks", checks())
	if sa.Revoked == 0 {
		t.Error("a had no partition revoked when b joined")
	}
	if checks() == 0 {
		t.Error("the commits were never checked")
	}
	n := wantEveryResult(t, results(t, addrs, adm), jobs, 3)
	dup := 0
	for _, c := range n {
		dup += c - 1
	}
	t.Logf("%d results repeated (records finished but not yet committed when their partition moved)", dup)
}

// A partition revoked while one of its records is stuck is committed up
// to that record and no further, after RevokeTimeout; the next owner
// starts at the stuck record.
func TestRevokedPartitionCommitsOnlyFinishedRecords(t *testing.T) {
	addrs, adm := newCluster(t, 2)
	jobs := ids("rv", 200)
	produceJobs(t, addrs, jobs, nil)
	const stuck = 30
	ma := newMachine("a", 10, 0)
	ma.behave = func(r *statepipe.Request[Job]) {
		if spk.Record(r.Ctx).Offset == stuck {
			<-r.Ctx.Done() // cancelled when its partition is given up
			r.Err = r.Ctx.Err()
		}
	}
	mb := newMachine("b", 10, 0)
	var mu sync.Mutex
	first := map[int32]int64{} // the lowest offset b ran, per partition
	mb.behave = func(r *statepipe.Request[Job]) {
		rec := spk.Record(r.Ctx)
		mu.Lock()
		if o, ok := first[rec.Partition]; !ok || rec.Offset < o {
			first[rec.Partition] = rec.Offset
		}
		mu.Unlock()
	}
	a, b := newSource(addrs), newSource(addrs)
	a.RevokeTimeout = 300 * time.Millisecond
	a.DrainTimeout = 300 * time.Millisecond
	stopA := runSource(t, a, newPipelines(t, ma))
	waitFor(t, 30*time.Second, "all but the two stuck records done", func() bool { return a.Stats().Done == 198 })
	stopB := runSource(t, b, newPipelines(t, mb))
	waitFor(t, 30*time.Second, "a partition moved to b", func() bool { return a.Stats().Revoked == 1 && len(b.Stats().Partitions) == 1 })
	moved := b.Stats().Partitions[0].Name
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "every record committed", func() bool { return lag(t, adm) == 0 })
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(first) != 2 {
		t.Fatalf("b started on %v, want both partitions (one moved by the join, one when a left)", first)
	}
	for p, o := range first {
		if o != stuck {
			t.Errorf("b ran partition %d from offset %d; want %d, the stuck record: a must commit up to it, and not past it", p, o, stuck)
		}
	}
	if st := a.Stats(); st.Released < 2 {
		t.Errorf("a released %d records, want at least the 2 stuck ones", st.Released)
	}
	t.Logf("moved by the join: %s; a: %+v", moved, a.Stats())
}
