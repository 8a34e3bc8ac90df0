// Command metrics runs a small statepipe machine under steady load and
// serves its Prometheus metrics, to look at with curl or a local
// Prometheus:
//
//	go run ./examples/metrics                 # until interrupted
//	curl -s 127.0.0.1:2112/metrics | grep statepipe_
//
// It listens on loopback only unless told otherwise (-addr).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/statepipe/statepipe"
	spprom "github.com/statepipe/statepipe/contrib/prometheus"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:2112", "address to serve /metrics on")
	runFor := flag.Duration("for", 0, "stop after this long (0: run until interrupted)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *runFor > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *runFor)
		defer cancel()
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "serving http://%s/metrics\n", ln.Addr())
	if err := run(ctx, ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// run feeds the machine and serves /metrics on ln until ctx ends, then
// shuts both down.
func run(ctx context.Context, ln net.Listener) error {
	p, err := statepipe.New[event](newMachine())
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		spprom.NewCollector(p, spprom.WithConstLabels(prometheus.Labels{"pipeline": "events"})),
		collectors.NewGoCollector(),
	)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	g := p.NewGroup()
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		defer g.Close()
		for i := 0; ; i++ {
			if err := g.Submit(ctx, event{id: i}); err != nil {
				return // ctx ended
			}
			if i%100 == 99 {
				time.Sleep(time.Millisecond) // a steady load, not a flood
			}
		}
	}()
	for range g.Out() {
	}
	<-fed
	p.Close()

	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(shutdown)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// event is the demo's payload.
type event struct {
	id       int
	enriched bool
	stored   bool
}

var errInvalid = errors.New("invalid event")

// machine validates events, sends one in ten to Repair (which gives up on
// one in fifty), enriches them, and stores them in bulk.
type machine struct {
	repair, enrich, store statepipe.Stage[event]
	bulk                  *statepipe.Batcher[event]
}

func newMachine() *machine {
	m := &machine{}
	m.repair, m.enrich, m.store = m.Repair, m.Enrich, m.Store
	m.bulk = statepipe.NewBatcher(func(_ context.Context, batch []statepipe.Request[event]) error {
		time.Sleep(time.Millisecond) // one bulk call
		for i := range batch {
			batch[i].Data.stored = true
		}
		return nil
	}, statepipe.BatchName("store"), statepipe.MaxItems(200), statepipe.MaxWait(5*time.Millisecond))
	return m
}

func (m *machine) Start(r statepipe.Request[event]) statepipe.Request[event] {
	if r.Data.id%10 == 0 {
		r.Next = m.repair
	} else {
		r.Next = m.enrich
	}
	return r
}

func (m *machine) Repair(r statepipe.Request[event]) statepipe.Request[event] {
	if r.Data.id%50 == 0 {
		r.Err = errInvalid
		return r
	}
	r.Next = m.enrich
	return r
}

func (m *machine) Enrich(r statepipe.Request[event]) statepipe.Request[event] {
	r.Data.enriched = true
	r.Next = m.store
	return r
}

func (m *machine) Store(r statepipe.Request[event]) statepipe.Request[event] {
	r.Next = nil // done after the flush
	return m.bulk.Add(r)
}

func (m *machine) Close() {}
