package dashboard_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/statepipe/statepipe/contrib/dashboard"
)

func items(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// BenchmarkRefresh is what one refresh costs the server: Stats and Graph
// read, the snapshot built and encoded as stats.json, with a full history
// (the clock moves a second per refresh: 300 points after 5 minutes).
func BenchmarkRefresh(b *testing.B) {
	p, _ := newPipelines(b)
	p.Do(b.Context(), items(1000)...)
	d := dashboard.New(p)
	clock := time.Now()
	dashboard.SetClock(d, func() time.Time { return clock })
	for b.Loop() {
		clock = clock.Add(time.Second)
		if _, err := json.Marshal(d.Snapshot()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRenderSVG lays out the orders machine's graph with Graphviz,
// as the page's drawing is made when the shape changes.
func BenchmarkRenderSVG(b *testing.B) {
	p, _ := newPipelines(b)
	p.Do(b.Context(), items(1000)...)
	g := p.Graph()
	dot := dashboard.PageDOT(g)
	for b.Loop() {
		if _, err := dashboard.RenderSVG(b.Context(), dot); err != nil {
			b.Fatal(err)
		}
	}
}
