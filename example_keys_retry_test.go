package statepipe_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/statepipe/statepipe"
)

// Event is a change to an account: events of one account must be applied
// in order, events of different accounts in parallel.
type Event struct {
	Account string
	Seq     int
}

// Ledger applies events; its single stage records the order per account.
type Ledger struct {
	mu      sync.Mutex
	applied map[string][]int
}

func (l *Ledger) Start(r statepipe.Request[Event]) statepipe.Request[Event] {
	time.Sleep(time.Duration(3-r.Data.Seq) * time.Millisecond) // later events are faster
	l.mu.Lock()
	l.applied[r.Data.Account] = append(l.applied[r.Data.Account], r.Data.Seq)
	l.mu.Unlock()
	return r
}

func (l *Ledger) Close() {}

// WithKey runs the events of one account one after another, in the order
// they were submitted, however fast each runs; accounts run in parallel.
func ExampleWithKey() {
	ledger := &Ledger{applied: map[string][]int{}}
	p, err := statepipe.New[Event](ledger,
		statepipe.WithKey(func(e Event) string { return e.Account }))
	if err != nil {
		panic(err)
	}
	var events []Event
	for seq := range 3 {
		for _, acct := range []string{"alice", "bob"} {
			events = append(events, Event{Account: acct, Seq: seq})
		}
	}
	p.Do(context.Background(), events...)
	p.Close()

	accounts := make([]string, 0, len(ledger.applied))
	for a := range ledger.applied {
		accounts = append(accounts, a)
	}
	sort.Strings(accounts)
	for _, a := range accounts {
		fmt.Println(a, ledger.applied[a])
	}
	// Output:
	// alice [0 1 2]
	// bob [0 1 2]
}

// errBusy is what a rate-limited service answers.
var errBusy = errors.New("429 too many requests")

// Enricher calls a flaky service in its stage.
type Enricher struct {
	calls map[int]int
	mu    sync.Mutex
}

func (e *Enricher) Start(r statepipe.Request[int]) statepipe.Request[int] {
	e.mu.Lock()
	e.calls[r.Data]++
	e.mu.Unlock()
	if r.Data%2 == 1 && r.Attempt() < 3 { // odd items fail twice
		// Marked: the stage runs again after a backoff, without holding
		// a worker meanwhile. RetryAfter would honour a Retry-After.
		r.Err = statepipe.Retry(errBusy)
		return r
	}
	r.Data *= 10
	return r
}

func (e *Enricher) Close() {}

// Retry marks an error worth retrying: the stage runs again, at most
// Backoff.Attempts times in all, and then the request fails with a
// *RetryError that still matches the original error.
func ExampleRetry() {
	e := &Enricher{calls: map[int]int{}}
	p, err := statepipe.New[int](e, statepipe.WithRetry(statepipe.Backoff{
		Attempts: 3,
		Initial:  time.Millisecond, // then 2ms; no jitter: Jitter is 0
	}))
	if err != nil {
		panic(err)
	}
	for _, r := range p.Do(context.Background(), 1, 2, 3) {
		fmt.Println(r.Data, r.Err)
	}
	p.Close()

	p, err = statepipe.New[int](&Enricher{calls: map[int]int{}}, statepipe.WithRetry(statepipe.Backoff{
		Attempts: 2, // too few for the odd items
		Initial:  time.Millisecond,
	}))
	if err != nil {
		panic(err)
	}
	r := p.Do(context.Background(), 7)[0]
	var re *statepipe.RetryError
	fmt.Println(errors.As(r.Err, &re), re.Attempts, errors.Is(r.Err, errBusy))
	fmt.Println(strings.TrimPrefix(r.Err.Error(), "statepipe: "))
	p.Close()
	// Output:
	// 10 <nil>
	// 20 <nil>
	// 30 <nil>
	// true 2 true
	// stage Start failed 2 times: 429 too many requests
}
