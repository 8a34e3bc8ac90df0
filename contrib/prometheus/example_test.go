package prometheus_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/statepipe/statepipe"
	spprom "github.com/statepipe/statepipe/contrib/prometheus"
)

type order struct {
	id    int
	saved bool
}

// orders saves every order in bulk.
type orders struct{ save *statepipe.Batcher[order] }

func (m *orders) Start(r statepipe.Request[order]) statepipe.Request[order] {
	return m.save.Add(r) // Next is nil: the order is done after the flush
}

func (m *orders) Close() {}

// Register a collector for the Pipelines and serve /metrics on a loopback
// port; the output is the part of a scrape that does not depend on timing.
func Example() {
	m := &orders{save: statepipe.NewBatcher(func(_ context.Context, batch []statepipe.Request[order]) error {
		for i := range batch {
			batch[i].Data.saved = true
		}
		return nil
	}, statepipe.BatchName("save"))}
	p, err := statepipe.New[order](m)
	if err != nil {
		panic(err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(spprom.NewCollector(p, spprom.WithConstLabels(prometheus.Labels{"pipeline": "orders"})))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()

	g := p.NewGroup()
	go func() {
		for i := range 10 {
			g.Submit(context.Background(), order{id: i})
		}
		g.Close()
	}()
	for range g.Out() {
	}
	p.Close() // the figures are exact once the Pipelines are idle or closed

	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		l := lines.Text()
		if strings.HasPrefix(l, "statepipe_requests_") && strings.Contains(l, "_total") ||
			strings.HasPrefix(l, "statepipe_stage_runs_total") ||
			strings.HasPrefix(l, "statepipe_batch_items_total") {
			fmt.Println(l)
		}
	}
	// Output:
	// statepipe_batch_items_total{batcher="save",pipeline="orders"} 10
	// statepipe_requests_completed_total{pipeline="orders"} 10
	// statepipe_requests_failed_total{pipeline="orders"} 0
	// statepipe_requests_submitted_total{pipeline="orders"} 10
	// statepipe_stage_runs_total{pipeline="orders",stage="Start"} 10
}
