package prometheus_test

import (
	"context"
	"errors"
	"time"

	"github.com/statepipe/statepipe"
)

// job is the payload of the test machine.
type job struct {
	n       int
	stored  bool
	audited bool
}

var (
	errFix   = errors.New("cannot fix")
	errAudit = errors.New("audit refused")
)

// machine routes and batches: Start sends one job in four through Fix,
// which fails one in eight; every job left goes through two batchers,
// store (a flush per request: MaxItems 1) and then audit (MaxItems 64,
// more than the tests have in flight, and an hour's linger, so only
// idleness or shutdown flushes it), which refuses one job in five.
type machine struct {
	store, audit        *statepipe.Batcher[job]
	fix, storeS, auditS statepipe.Stage[job]
}

func newMachine() *machine {
	m := &machine{}
	m.fix, m.storeS, m.auditS = m.Fix, m.Store, m.Audit
	m.store = statepipe.NewBatcher(func(_ context.Context, batch []statepipe.Request[job]) error {
		for i := range batch {
			batch[i].Data.stored = true
		}
		return nil
	}, statepipe.BatchName("store"), statepipe.MaxItems(1))
	m.audit = statepipe.NewBatcher(func(_ context.Context, batch []statepipe.Request[job]) error {
		for i := range batch {
			if batch[i].Data.n%5 == 0 {
				batch[i].Err = errAudit
				continue
			}
			batch[i].Data.audited = true
		}
		return nil
	}, statepipe.BatchName("audit"), statepipe.MaxItems(64), statepipe.MaxWait(time.Hour))
	return m
}

func (m *machine) Start(r statepipe.Request[job]) statepipe.Request[job] {
	if r.Data.n%4 == 0 {
		r.Next = m.fix
	} else {
		r.Next = m.storeS
	}
	return r
}

func (m *machine) Fix(r statepipe.Request[job]) statepipe.Request[job] {
	if r.Data.n%8 == 0 {
		r.Err = errFix
		return r
	}
	r.Next = m.storeS
	return r
}

func (m *machine) Store(r statepipe.Request[job]) statepipe.Request[job] {
	r.Next = m.auditS
	return m.store.Add(r)
}

func (m *machine) Audit(r statepipe.Request[job]) statepipe.Request[job] {
	r.Next = nil
	return m.audit.Add(r)
}

func (m *machine) Close() {}

// expected are the machine's exact counts for jobs 0..n-1.
type expected struct {
	submitted, completed, failed uint64
	start, fix, fixErrors, store uint64
	auditFailed                  uint64
}

func expect(n int) expected {
	var e expected
	for i := range n {
		e.submitted++
		e.start++
		if i%4 == 0 {
			e.fix++
			if i%8 == 0 {
				e.fixErrors++
				e.failed++
				continue
			}
		}
		e.store++
		if i%5 == 0 {
			e.auditFailed++
			e.failed++
			continue
		}
		e.completed++
	}
	return e
}
