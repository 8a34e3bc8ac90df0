package statepipe

import (
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// routeMachine routes by data: even numbers go through Even, odd ones
// through Odd, negative ones fail in Start, and multiples of 3 are stored in
// bulk before Finish.
type routeMachine struct {
	even, odd, finish Stage[int]
	bulk              *Batcher[int]
}

func newRouteMachine() *routeMachine {
	m := &routeMachine{}
	m.even, m.odd, m.finish = m.Even, m.Odd, m.Finish
	m.bulk = NewBatcher(func(ctx context.Context, b []Request[int]) error { return nil }, BatchName("store"), MaxWait(time.Millisecond))
	return m
}

func (m *routeMachine) Start(r Request[int]) Request[int] {
	switch {
	case r.Data < 0:
		r.Err = errors.New("negative")
	case r.Data%2 == 0:
		r.Next = m.even
	default:
		r.Next = m.odd
	}
	return r
}

func (m *routeMachine) Even(r Request[int]) Request[int]   { return m.store(r) }
func (m *routeMachine) Odd(r Request[int]) Request[int]    { return m.store(r) }
func (m *routeMachine) Finish(r Request[int]) Request[int] { return r }
func (m *routeMachine) Close()                             {}

func (m *routeMachine) store(r Request[int]) Request[int] {
	if r.Data%3 != 0 {
		return r
	}
	r.Next = m.finish
	return m.bulk.Add(r)
}

// runRoutes sends -2..11 through a routeMachine and returns the Pipelines,
// closed.
func runRoutes(t *testing.T, opts ...Option) *Pipelines[int] {
	t.Helper()
	p, err := New[int](newRouteMachine(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	g := p.NewGroup()
	for i := -2; i < 12; i++ {
		if err := g.Submit(context.Background(), i); err != nil {
			t.Fatal(err)
		}
	}
	g.Close()
	for range g.Out() {
	}
	p.Close()
	return p
}

func TestGraphMatchesRoutesTaken(t *testing.T) {
	g := runRoutes(t).Graph()
	got := map[string]uint64{}
	for _, e := range g.Edges {
		got[e.From+"->"+e.To] = e.Count
	}
	// -2..11: 2 negative; even 0..10: 6 (0, 6 stored); odd 1..11: 6 (3, 9 stored).
	want := map[string]uint64{
		"(in)->Start":     14,
		"Start->(failed)": 2,
		"Start->Even":     6,
		"Start->Odd":      6,
		"Even->(done)":    4,
		"Odd->(done)":     4,
		"Even->store":     2,
		"Odd->store":      2,
		"store->Finish":   4, // resumed at Finish...
		"Finish->(done)":  4, // ...which ends them
	}
	if len(got) != len(want) {
		t.Errorf("edges %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("edge %s: %d, want %d", k, got[k], n)
		}
	}
	kinds := map[string]NodeKind{}
	for _, n := range g.Nodes {
		kinds[n.Name] = n.Kind
	}
	if kinds["store"] != NodeBatch || kinds["Even"] != NodeStage || kinds["(failed)"] != NodeFailed {
		t.Errorf("node kinds %v", kinds)
	}
}

func TestGraphRendering(t *testing.T) {
	g := runRoutes(t).Graph()
	for i := range g.Edges { // sampled, so not the same from run to run: TestGraphLabelsShowMeanLatency
		g.Edges[i].MeanLatency = 0
	}
	for _, tc := range []struct {
		file string
		text string
	}{
		{"routes.mmd", g.Mermaid()},
		{"routes.dot", g.DOT()},
	} {
		golden := filepath.Join("testdata", tc.file)
		if *update {
			if err := os.WriteFile(golden, []byte(tc.text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		if tc.text != string(want) {
			t.Errorf("%s differs from the golden file:\n%s", tc.file, tc.text)
		}
	}
	if !strings.Contains(g.Mermaid(), "Start -->|6| Even") {
		t.Errorf("Mermaid edges must read \"From -->|count| To\":\n%s", g.Mermaid())
	}
}

// TestGraphDOTParses feeds the DOT output to Graphviz, which .ci/run
// installs; on a machine without it the check cannot run.
func TestGraphDOTParses(t *testing.T) {
	dot, err := exec.LookPath("dot")
	if err != nil {
		t.Skip("Graphviz dot is not installed")
	}
	cmd := exec.Command(dot, "-Tsvg")
	cmd.Stdin = strings.NewReader(runRoutes(t).Graph().DOT())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "<svg") {
		t.Fatalf("dot rejected the graph: %v\n%s", err, out)
	}
}

func TestGraphLabelsShowMeanLatency(t *testing.T) {
	g := Graph{Edges: []GraphEdge{
		{From: "Start", To: "Save", Count: 7, MeanLatency: 1234567 * time.Nanosecond},
		{From: "(in)", To: "Start", Count: 7},
	}}
	if m := g.Mermaid(); !strings.Contains(m, "Start -->|7 · 1.23ms| Save") || !strings.Contains(m, "_in_ -->|7| Start") {
		t.Errorf("Mermaid labels:\n%s", m)
	}
	if d := g.DOT(); !strings.Contains(d, `"Start" -> "Save" [label="7\n1.23ms"];`) || !strings.Contains(d, `"(in)" -> "Start" [label="7"];`) {
		t.Errorf("DOT labels:\n%s", d)
	}
}

func TestGraphEdgeLatency(t *testing.T) {
	// With an observer every stage run is timed, so every edge from a
	// stage has a mean latency.
	p := runRoutes(t, WithObserver(ObserverFunc(func(Event) {})))
	for _, e := range p.Graph().Edges {
		if e.From != "(in)" && e.From != "store" && e.MeanLatency <= 0 {
			t.Errorf("edge %s->%s has no latency", e.From, e.To)
		}
	}
}

func TestEdgeCountsSpill(t *testing.T) {
	var c edgeCounts
	for from := range 20 {
		for to := range 20 {
			c.add(node(from), node(to), int64(from))
		}
	}
	var merged edgeCounts
	merged.merge(&c)
	merged.merge(&c)
	n := 0
	merged.each(func(from, to node, e *edgeData) {
		n++
		if e.count != 2 || e.timed != 2 || e.timedSum != 2*int64(from) {
			t.Errorf("edge %d->%d: %+v", from, to, *e)
		}
	})
	if n != 400 {
		t.Fatalf("%d edges, want 400", n)
	}
	c.reset()
	c.each(func(node, node, *edgeData) { t.Fatal("edge left after reset") })
}
