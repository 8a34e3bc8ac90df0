package dashboard

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"regexp"
	"strings"
	"sync"

	"github.com/goccy/go-graphviz"
	"github.com/statepipe/statepipe"
)

// renderMu serialises renders: one Graphviz instance runs at a time, and
// renders are rare (a shape change), so there is nothing to gain from more.
var renderMu sync.Mutex

// RenderSVG lays out a graph in the Graphviz language (as
// [statepipe.Graph.DOT] writes it) and returns it as SVG. Graphviz runs in
// this process, compiled to WebAssembly: nothing needs to be installed. A
// render of a machine of four stages and a batcher takes about 2ms
// (BenchmarkRenderSVG).
func RenderSVG(ctx context.Context, dot string) ([]byte, error) {
	renderMu.Lock()
	defer renderMu.Unlock()
	gv, err := graphviz.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("dashboard: starting graphviz: %w", err)
	}
	defer gv.Close()
	g, err := graphviz.ParseBytes([]byte(dot))
	if err != nil {
		return nil, fmt.Errorf("dashboard: parsing the graph: %w", err)
	}
	defer g.Close()
	var b bytes.Buffer
	if err := gv.Render(ctx, g, graphviz.SVG, &b); err != nil {
		return nil, fmt.Errorf("dashboard: rendering the graph: %w", err)
	}
	return b.Bytes(), nil
}

// pageStyle is added to the core's DOT for the page: room in each node for
// the live numbers the page writes in (two lines under the name), and
// between ranks for the edge labels.
const pageStyle = `    graph [ranksep=0.7, nodesep=0.35, fontname="Helvetica", bgcolor="transparent"];
    node [width=1.8, height=0.85, fontname="Helvetica", fontsize=13];
    edge [fontname="Helvetica", fontsize=11];
`

// edgeLabel finds the label of an edge statement of the core's DOT.
var edgeLabel = regexp.MustCompile(`^(\s*"(?:[^"\\]|\\.)*" -> "(?:[^"\\]|\\.)*" \[.*label=)"(?:[^"\\]|\\.)*"`)

// pageDOT is the core's DOT with the page's style. Its defaults come
// before the core's node statements, so the core's attributes win. Each
// edge label is replaced by one as wide as the widest the page writes in
// its place (count, rate, mean latency), so that the layout leaves it room.
func pageDOT(g statepipe.Graph) string {
	dot := g.DOT()
	head, rest, ok := strings.Cut(dot, "{\n")
	if !ok {
		return dot
	}
	var most uint64
	for _, e := range g.Edges {
		most = max(most, e.Count)
	}
	room := labelRoom(most)
	lines := strings.Split(rest, "\n")
	for i, l := range lines {
		if m := edgeLabel.FindStringSubmatchIndex(l); m != nil {
			lines[i] = l[:m[3]] + `"` + room + `"` + l[m[1]:]
		}
	}
	return head + "{\n" + pageStyle + strings.Join(lines, "\n")
}

// labelRoom is as wide as an edge label the page writes: the count over
// the rate and mean latency, for counts of up to the largest's digits (the
// shape changes when those grow).
func labelRoom(most uint64) string {
	return strings.Repeat("0", len(fmt.Sprint(most))+len(fmt.Sprint(most))/3) + `\n9,999/s · 999µs`
}

// shapeOf identifies the drawing of g: the nodes drawn, the edges, and
// how many digits the largest count has (the labels grow with it, and a
// new drawing gives them room). Numbers within one shape are written into
// the drawing by the page.
func shapeOf(g statepipe.Graph) string {
	h := fnv.New64a()
	drawn := map[string]bool{}
	var most uint64
	for _, e := range g.Edges {
		drawn[e.From], drawn[e.To] = true, true
		fmt.Fprintf(h, "e%q>%q\n", e.From, e.To)
		most = max(most, e.Count)
	}
	for _, n := range g.Nodes {
		if drawn[n.Name] || n.Kind == statepipe.NodeStage {
			fmt.Fprintf(h, "n%d%q\n", n.Kind, n.Name)
		}
	}
	fmt.Fprintf(h, "d%d", len(fmt.Sprint(most)))
	return fmt.Sprintf("%016x", h.Sum64())
}

// drawing caches the SVG of the latest shape.
type drawing struct {
	mu    sync.Mutex
	shape string
	svg   []byte
	n     int // renders so far; for tests
}

// svg returns the drawing of g, rendering it only if its shape changed.
func (d *drawing) get(ctx context.Context, g statepipe.Graph) (shape string, svg []byte, err error) {
	shape = shapeOf(g)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.svg != nil && d.shape == shape {
		return d.shape, d.svg, nil
	}
	svg, err = RenderSVG(ctx, pageDOT(g))
	if err != nil {
		return "", nil, err
	}
	d.shape, d.svg = shape, svg
	d.n++
	return shape, svg, nil
}
