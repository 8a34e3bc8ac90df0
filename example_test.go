package statepipe_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/statepipe/statepipe"
)

// Order is the data that flows through the examples' machines.
type Order struct {
	ID     int
	Amount int
	Status string
}

// Checkout is a state machine: each exported method with the Stage
// signature is a stage, Start comes first, and each stage names the next.
type Checkout struct {
	// Stage values made once, so that naming the next stage allocates nothing.
	price, approve, review statepipe.Stage[Order]
}

func NewCheckout() *Checkout {
	c := &Checkout{}
	c.price, c.approve, c.review = c.Price, c.Approve, c.Review
	return c
}

func (c *Checkout) Start(r statepipe.Request[Order]) statepipe.Request[Order] {
	if r.Data.Amount < 0 {
		r.Err = fmt.Errorf("order %d: negative amount", r.Data.ID)
		return r
	}
	r.Next = c.price
	return r
}

func (c *Checkout) Price(r statepipe.Request[Order]) statepipe.Request[Order] {
	r.Data.Amount += r.Data.Amount / 10 // tax
	// Data-driven routing: big orders take another path.
	if r.Data.Amount > 1000 {
		r.Next = c.review
	} else {
		r.Next = c.approve
	}
	return r
}

func (c *Checkout) Review(r statepipe.Request[Order]) statepipe.Request[Order] {
	r.Data.Status = "held for review"
	return r // Next is nil: the request is finished
}

func (c *Checkout) Approve(r statepipe.Request[Order]) statepipe.Request[Order] {
	r.Data.Status = "approved"
	return r
}

func (c *Checkout) Close() {}

// A basic machine: submit through a group, read results from its Out.
func Example() {
	p, err := statepipe.New[Order](NewCheckout(), statepipe.WithOrdered())
	if err != nil {
		panic(err)
	}
	defer p.Close()
	fmt.Println("stages:", p.Stages())

	g := p.NewGroup()
	go func() {
		defer g.Close() // end of input: Out closes after the last result
		for i, amount := range []int{100, 2000, -5} {
			if err := g.Submit(context.Background(), Order{ID: i, Amount: amount}); err != nil {
				panic(err)
			}
		}
	}()
	for r := range g.Out() {
		if r.Err != nil {
			fmt.Println("failed:", r.Err)
			continue
		}
		fmt.Printf("order %d: %d, %s\n", r.Data.ID, r.Data.Amount, r.Data.Status)
	}
	// Output:
	// stages: [Start Approve Price Review]
	// order 0: 110, approved
	// order 1: 2200, held for review
	// failed: order 2: negative amount
}

// Groups let many callers share one set of pipelines: each caller's results
// come back only on its own group's Out.
func ExamplePipelines_NewGroup() {
	p, err := statepipe.New[Order](NewCheckout())
	if err != nil {
		panic(err)
	}
	defer p.Close()

	var wg sync.WaitGroup
	totals := make([]int, 3)
	for caller := range totals {
		g := p.NewGroup()
		wg.Go(func() {
			for r := range g.Out() {
				totals[caller] += r.Data.Amount
			}
		})
		go func() {
			defer g.Close()
			for i := range 10 {
				_ = g.Submit(context.Background(), Order{ID: i, Amount: 10 * (caller + 1)})
			}
		}()
	}
	wg.Wait()
	fmt.Println(totals)
	// Output: [110 220 330]
}

// An ordered group releases results in submission order, however long each
// one takes.
func ExampleOrdered() {
	p, err := statepipe.New[Order](&Sleepy{}, statepipe.WithPipelines(4))
	if err != nil {
		panic(err)
	}
	defer p.Close()

	g := p.NewGroup(statepipe.Ordered())
	go func() {
		defer g.Close()
		for i := range 5 {
			_ = g.Submit(context.Background(), Order{ID: i})
		}
	}()
	for r := range g.Out() {
		fmt.Print(r.Data.ID, " ")
	}
	fmt.Println()
	// Output: 0 1 2 3 4
}

// Sleepy takes longer for early orders, so they finish last.
type Sleepy struct{}

func (Sleepy) Start(r statepipe.Request[Order]) statepipe.Request[Order] {
	time.Sleep(time.Duration(5-r.Data.ID) * time.Millisecond)
	return r
}

func (Sleepy) Close() {}

// BulkStore is a fake remote service with a bulk API: one call stores many
// orders and takes 2ms, whatever their number. It counts its calls.
type BulkStore struct {
	calls atomic.Int64
}

func (s *BulkStore) PutMany(ctx context.Context, orders []*Order) error {
	s.calls.Add(1)
	time.Sleep(2 * time.Millisecond)
	for _, o := range orders {
		o.Status = "stored"
	}
	return nil
}

// Ingest validates each order, stores orders in bulk through a Batcher, and
// goes on after the bulk call.
type Ingest struct {
	store *BulkStore
	bulk  *statepipe.Batcher[Order]
	done  statepipe.Stage[Order]
	seen  atomic.Int64
}

func NewIngest(store *BulkStore) *Ingest {
	in := &Ingest{store: store}
	in.done = in.Done
	in.bulk = statepipe.NewBatcher(in.flush, statepipe.MaxItems(100), statepipe.MaxWait(50*time.Millisecond))
	return in
}

// flush serves a whole batch with one call and sets each member's result.
func (in *Ingest) flush(ctx context.Context, batch []statepipe.Request[Order]) error {
	orders := make([]*Order, len(batch))
	for i := range batch {
		orders[i] = &batch[i].Data
	}
	return in.store.PutMany(ctx, orders)
}

func (in *Ingest) Start(r statepipe.Request[Order]) statepipe.Request[Order] {
	if r.Data.Amount <= 0 {
		r.Err = errors.New("empty order")
		return r
	}
	r.Next = in.done      // where the request resumes after the flush
	return in.bulk.Add(r) // park it: the worker is free at once
}

func (in *Ingest) Done(r statepipe.Request[Order]) statepipe.Request[Order] {
	in.seen.Add(1)
	return r
}

func (in *Ingest) Close() {}

// A Batcher turns 1,000 single calls into 10 or 11 bulk calls. If the
// workers find nothing else to do after the first order, it goes alone at
// once rather than wait for company; the others gather while that call is
// under way, 100 to a call.
func ExampleBatcher() {
	store := &BulkStore{}
	ingest := NewIngest(store)
	p, err := statepipe.New[Order](ingest)
	if err != nil {
		panic(err)
	}

	g := p.NewGroup()
	go func() {
		defer g.Close()
		for i := range 1000 {
			_ = g.Submit(context.Background(), Order{ID: i, Amount: 1})
		}
	}()
	stored := 0
	for r := range g.Out() {
		if r.Err == nil && r.Data.Status == "stored" {
			stored++
		}
	}
	p.Close()

	s := ingest.bulk.Stats()
	fmt.Println("stored:", stored, "after the bulk call:", ingest.seen.Load())
	fmt.Println("at most 11 bulk calls:", store.calls.Load() <= 11)
	fmt.Println("at least 9 full batches:", s.Flushes[statepipe.FlushSize] >= 9)
	// Output:
	// stored: 1000 after the bulk call: 1000
	// at most 11 bulk calls: true
	// at least 9 full batches: true
}

// Row is bound for one table of a database.
type Row struct {
	Table string
	Key   int
}

// Loader batches rows per table: one bulk insert per table.
type Loader struct {
	bulk *statepipe.Batcher[Row]

	mu       sync.Mutex
	inserted map[string]int // rows per table
	mixed    int            // flushes that mixed tables: never
}

func (l *Loader) Start(r statepipe.Request[Row]) statepipe.Request[Row] { return l.bulk.Add(r) }
func (l *Loader) Close()                                                {}

// insert is the flush: one bulk insert into the batch's table.
func (l *Loader) insert(ctx context.Context, batch []statepipe.Request[Row]) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	table := batch[0].Data.Table
	for _, r := range batch {
		if r.Data.Table != table {
			l.mixed++
		}
	}
	l.inserted[table] += len(batch)
	return nil
}

// BatchKey keeps one batch per key: rows for different tables never share a
// flush, and each table's batch fills and lingers on its own.
func ExampleBatchKey() {
	l := &Loader{inserted: map[string]int{}}
	l.bulk = statepipe.NewBatcher(l.insert,
		statepipe.BatchKey(func(r Row) string { return r.Table }), statepipe.MaxItems(50))

	p, err := statepipe.New[Row](l)
	if err != nil {
		panic(err)
	}
	g := p.NewGroup()
	for i := range 300 {
		table := []string{"users", "orders", "items"}[i%3]
		_ = g.Submit(context.Background(), Row{Table: table, Key: i})
	}
	g.Close()
	for range g.Out() {
	}
	p.Close()
	fmt.Println(l.inserted, "mixed flushes:", l.mixed)
	// Output: map[items:100 orders:100 users:100] mixed flushes: 0
}

// Do is the way to call statepipe from a request handler: one call, every
// item's result in the order given, however many items there are.
func ExamplePipelines_Do() {
	p, err := statepipe.New[Order](NewCheckout())
	if err != nil {
		panic(err)
	}
	defer p.Close()

	orders := []Order{{ID: 1, Amount: 100}, {ID: 2, Amount: -1}, {ID: 3, Amount: 5000}}
	for _, r := range p.Do(context.Background(), orders...) {
		if r.Err != nil {
			fmt.Println("failed:", r.Err)
			continue
		}
		fmt.Printf("order %d: %s\n", r.Data.ID, r.Data.Status)
	}
	// Output:
	// order 1: approved
	// failed: order 2: negative amount
	// order 3: held for review
}

// A consumer that stops reading before Out closes discards the group, so
// that nothing waits for it: what it has not read is dropped.
func ExampleGroup_Discard() {
	p, err := statepipe.New[Order](NewCheckout())
	if err != nil {
		panic(err)
	}
	defer p.Close()

	g := p.NewGroup()
	go func() {
		defer g.Close()
		for i := range 100 {
			if g.Submit(context.Background(), Order{ID: i, Amount: 10}) != nil {
				return // discarded: Submit says ErrClosed
			}
		}
	}()
	first := <-g.Out() // this consumer wanted one result only
	g.Discard()
	fmt.Println(first.Data.Status)
	// Output: approved
}
