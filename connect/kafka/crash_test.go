package kafka_test

import (
	"fmt"
	"testing"
	"time"

	spk "github.com/statepipe/statepipe/connect/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

// killRun runs n jobs through three worker processes, SIGKILLs the first
// once a quarter of the jobs is committed, and waits until the group has
// committed everything. It returns the results and the survivors' stats.
func killRun(t *testing.T, n int, spec workerSpec) (jobs []string, got []Job, survivors []spk.Stats, uncommitted int) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	addrs, adm := newCluster(t, 6)
	spec.Addrs = addrs
	ws := startWorkers(t, adm, 3, spec)
	jobs = ids("kill", n)
	start := time.Now()
	produceJobs(t, addrs, jobs, nil)
	waitFor(t, 60*time.Second, "a quarter committed", func() bool {
		l := lag(t, adm)
		return l >= 0 && l <= int64(3*n/4)
	})
	ws[0].Kill(t)
	t.Logf("killed w0 after %v, with lag %d", time.Since(start).Round(time.Millisecond), lag(t, adm))
	waitFor(t, 60*time.Second, "every record committed", func() bool { return lag(t, adm) == 0 })
	t.Logf("all committed %v after the start", time.Since(start).Round(time.Millisecond))
	for _, w := range ws[1:] {
		s := stopWorker(t, w)
		t.Logf("survivor: %+v", s)
		survivors = append(survivors, s)
	}
	return jobs, results(t, addrs, adm), survivors, len(readTopicAs(t, addrs, adm, resultsTopic, kgo.ReadUncommitted()))
}

// A SIGKILLed worker's partitions move to the others, which start at its
// last commit: every record gets a result, and the ones it held are
// processed again (at least once).
func TestKilledWorkersRecordsGoToTheOthers(t *testing.T) {
	jobs, got, survivors, _ := killRun(t, 3000, workerSpec{MaxInFlight: 64, MaxItems: 16, FlushSleep: 5 * time.Millisecond})
	wantEveryResult(t, got, jobs, 2)
	byWorker := map[string]int{}
	for _, j := range got {
		byWorker[j.Worker]++
	}
	repeated := len(got) - len(jobs)
	t.Logf("results by worker %v; %d repeated (held by w0, or finished by it and not yet committed)", byWorker, repeated)
	if byWorker["w0"] == 0 {
		t.Error("w0 made no result before it was killed")
	}
	var assigned uint64
	for _, s := range survivors {
		assigned += s.Assigned
	}
	if assigned <= 4 {
		t.Errorf("the survivors were assigned %d partitions in all; w0's should have moved to them", assigned)
	}
}

// With PartitionOrder, each worker runs the records of a partition in
// offset order, also those it takes over from a killed worker.
func TestPartitionOrderHoldsUnderKill(t *testing.T) {
	jobs, got, _, _ := killRun(t, 1500, workerSpec{MaxInFlight: 64, MaxItems: 16, FlushSleep: 2 * time.Millisecond, Order: spk.PartitionOrder})
	wantEveryResult(t, got, jobs, 2)
	last := map[string]int64{} // by worker and partition
	for _, j := range got {
		k := fmt.Sprintf("%s/%d", j.Worker, j.Partition)
		if o, ok := last[k]; ok && j.Offset <= o {
			t.Errorf("%s: offset %d after %d", k, j.Offset, o)
		}
		last[k] = j.Offset
	}
}

// With transactions, a worker killed in the middle of one leaves no
// result behind that a committed read sees twice: its open transaction
// is aborted, and its records run again elsewhere.
func TestTransactionsLeaveNoDuplicatesAfterKill(t *testing.T) {
	jobs, got, survivors, all := killRun(t, 1500, workerSpec{MaxInFlight: 64, MaxItems: 16, FlushSleep: 5 * time.Millisecond, Transactional: true})
	wantEveryResult(t, got, jobs, 1)
	// What an uncommitted read sees besides: the results of aborted
	// transactions, the killed worker's open one among them if it was
	// killed in the middle of one (the likely case: it is always in one).
	t.Logf("%d results committed; %d more in aborted transactions", len(got), all-len(got))
	var tx uint64
	for _, s := range survivors {
		tx += s.Transactions
	}
	if tx == 0 {
		t.Error("the survivors committed no transaction")
	}
}
