package statepipe

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// node is a node of the observed graph: a stage by its id, a batcher
// from firstBatchNode on, or one of the three ends.
type node uint32

const (
	firstBatchNode node = 1 << 24            // batcher i is node firstBatchNode+i
	nodeIn         node = math.MaxUint32 - 2 // where every request enters: Submit
	nodeDone       node = math.MaxUint32 - 1 // where a request leaves with Err == nil
	nodeFailed     node = math.MaxUint32     // where a request leaves with an error
)

// batchNode returns the node of the i-th batcher.
func batchNode(i int) node { return firstBatchNode + node(i) }

// The ends of the graph have names no stage can have.
const (
	inName     = "(in)"
	doneName   = "(done)"
	failedName = "(failed)"
)

// NodeKind says what a node of a Graph is.
type NodeKind int

const (
	NodeStage  NodeKind = iota // a stage of the machine
	NodeBatch                  // a Batcher: requests wait there for a bulk call
	NodeIn                     // where requests enter
	NodeDone                   // where requests leave with Err == nil
	NodeFailed                 // where requests leave with an error
)

// Graph is the machine as run: the stages found by New (and other functions
// seen as Next), the batchers, and every transition taken so far.
type Graph struct {
	Nodes []GraphNode
	Edges []GraphEdge
}

// GraphNode is one node of a Graph.
type GraphNode struct {
	Name string
	Kind NodeKind
	Runs uint64 // stage runs, or requests flushed by a batcher
}

// GraphEdge is one transition taken: from a node to the next.
type GraphEdge struct {
	From, To string
	Count    uint64 // requests that took it
	// MeanLatency is the mean time spent in From before taking this edge,
	// over the timed requests (zero if none, and for edges from the ends
	// and from batchers).
	MeanLatency time.Duration
}

// Graph returns the stages found at New and the transitions observed so
// far, with the same freshness as Stats.
func (p *Pipelines[T]) Graph() Graph {
	var c counts
	p.collect(&c)
	edges := &c.edges
	stats := p.Stats()
	var g Graph
	name := func(n node) string {
		switch {
		case n == nodeIn:
			return inName
		case n == nodeDone:
			return doneName
		case n == nodeFailed:
			return failedName
		case n >= firstBatchNode:
			if i := int(n - firstBatchNode); i < len(stats.Batchers) {
				return stats.Batchers[i].Name
			}
			return fmt.Sprintf("batch%d", n-firstBatchNode)
		case int(n) < len(stats.Stages):
			return stats.Stages[n].Name
		}
		return fmt.Sprintf("stage%d", n)
	}
	g.Nodes = append(g.Nodes, GraphNode{Name: inName, Kind: NodeIn, Runs: stats.Submitted})
	for _, s := range stats.Stages {
		g.Nodes = append(g.Nodes, GraphNode{Name: s.Name, Kind: NodeStage, Runs: s.Runs})
	}
	for _, b := range stats.Batchers {
		g.Nodes = append(g.Nodes, GraphNode{Name: b.Name, Kind: NodeBatch, Runs: b.Items})
	}
	g.Nodes = append(g.Nodes,
		GraphNode{Name: doneName, Kind: NodeDone, Runs: stats.Completed},
		GraphNode{Name: failedName, Kind: NodeFailed, Runs: stats.Failed})
	edges.each(func(from, to node, e *edgeData) {
		ge := GraphEdge{From: name(from), To: name(to), Count: e.count}
		if e.timed > 0 {
			ge.MeanLatency = time.Duration(e.timedSum / int64(e.timed))
		}
		g.Edges = append(g.Edges, ge)
	})
	order := make(map[string]int, len(g.Nodes))
	for i, n := range g.Nodes {
		order[n.Name] = i
	}
	slices.SortFunc(g.Edges, func(a, b GraphEdge) int {
		return cmp.Or(cmp.Compare(order[a.From], order[b.From]), cmp.Compare(order[a.To], order[b.To]))
	})
	return g
}

// Mermaid renders the graph as a Mermaid flowchart. Each edge reads
// "From -->|count| To", or "From -->|count · mean| To" where the mean time
// in From before the edge is known; batchers are hexagons, and the ends
// rounded.
func (g Graph) Mermaid() string {
	var b strings.Builder
	b.WriteString("flowchart LR\n")
	for _, n := range g.Nodes {
		if g.touches(n.Name) || n.Kind == NodeStage {
			fmt.Fprintf(&b, "    %s%s\n", mermaidID(n.Name), mermaidShape(n))
		}
	}
	for _, e := range g.Edges {
		label := fmt.Sprint(e.Count)
		if e.MeanLatency > 0 {
			label += " · " + shortDuration(e.MeanLatency).String()
		}
		fmt.Fprintf(&b, "    %s -->|%s| %s\n", mermaidID(e.From), label, mermaidID(e.To))
	}
	return b.String()
}

// DOT renders the graph in the Graphviz language. Edge labels are the
// count, and under it the mean time in From before the edge where known.
func (g Graph) DOT() string {
	var b strings.Builder
	b.WriteString("digraph statepipe {\n    rankdir=LR;\n    node [shape=box];\n")
	for _, n := range g.Nodes {
		if !g.touches(n.Name) && n.Kind != NodeStage {
			continue
		}
		attrs := ""
		switch n.Kind {
		case NodeBatch:
			attrs = ", shape=hexagon"
		case NodeIn, NodeDone:
			attrs = ", shape=oval"
		case NodeFailed:
			attrs = ", shape=oval, color=red"
		}
		fmt.Fprintf(&b, "    %q [label=%q%s];\n", n.Name, n.Name, attrs)
	}
	for _, e := range g.Edges {
		label := fmt.Sprint(e.Count)
		if e.MeanLatency > 0 {
			label += "\n" + shortDuration(e.MeanLatency).String()
		}
		fmt.Fprintf(&b, "    %q -> %q [label=%q];\n", e.From, e.To, label)
	}
	b.WriteString("}\n")
	return b.String()
}

// shortDuration rounds d to three significant digits for a label: 1.23ms,
// 45.6µs.
func shortDuration(d time.Duration) time.Duration {
	for unit := time.Duration(1); unit < time.Hour; unit *= 10 {
		if d < 1000*unit {
			return d.Round(unit)
		}
	}
	return d.Round(time.Second)
}

// touches reports whether an edge starts or ends at the named node.
func (g Graph) touches(name string) bool {
	for _, e := range g.Edges {
		if e.From == name || e.To == name {
			return true
		}
	}
	return false
}

// mermaidID makes a name a Mermaid node id: stage names are Go identifiers
// already; others (the ends "(in)", closures "Machine.Start.func1") get
// underscores.
func mermaidID(name string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return '_'
	}, name)
}

func mermaidShape(n GraphNode) string {
	label := strings.ReplaceAll(n.Name, `"`, "'")
	switch n.Kind {
	case NodeBatch:
		return fmt.Sprintf(`{{"%s"}}`, label)
	case NodeIn, NodeDone, NodeFailed:
		return fmt.Sprintf(`(["%s"])`, label)
	}
	return fmt.Sprintf(`["%s"]`, label)
}

// edgeCounts counts transitions in a small open-addressing table keyed by
// (from, to): counting one is a probe and an increment. A machine with more
// distinct transitions than slots between two publications spills into a
// map.
type edgeCounts struct {
	slots [128]edgeSlot
	taken [128]uint8 // indices of the slots in use, so reset touches only those
	n     int
	spill map[uint64]*edgeData
}

type edgeSlot struct {
	key  uint64 // 1 + from<<32 | to; 0 is empty
	data edgeData
}

type edgeData struct {
	count    uint64
	timed    uint64 // transitions whose From run was timed
	timedSum int64  // their total time in From, in nanoseconds
}

func edgeKey(from, to node) uint64 { return uint64(from)<<32 | uint64(to) }

// add counts a transition; ns < 0 means From's run was not timed.
func (c *edgeCounts) add(from, to node, ns int64) {
	e := c.data(from, to)
	e.count++
	if ns >= 0 {
		e.timed++
		e.timedSum += ns
	}
}

func (c *edgeCounts) data(from, to node) *edgeData {
	key := edgeKey(from, to)
	want := key + 1
	// A multiplicative hash spreads the keys; the top bits index a slot.
	i := int((key * 0x9E3779B97F4A7C15) >> (64 - 7))
	for range len(c.slots) {
		s := &c.slots[i]
		if s.key == want {
			return &s.data
		}
		if s.key == 0 {
			s.key = want
			c.taken[c.n] = uint8(i)
			c.n++
			return &s.data
		}
		i = (i + 1) % len(c.slots)
	}
	if c.spill == nil {
		c.spill = map[uint64]*edgeData{}
	}
	e := c.spill[key]
	if e == nil {
		e = &edgeData{}
		c.spill[key] = e
	}
	return e
}

func (c *edgeCounts) each(f func(from, to node, e *edgeData)) {
	for _, i := range c.taken[:c.n] {
		s := &c.slots[i]
		k := s.key - 1
		f(node(k>>32), node(k), &s.data)
	}
	for k, e := range c.spill {
		f(node(k>>32), node(k), e)
	}
}

func (c *edgeCounts) merge(o *edgeCounts) {
	o.each(func(from, to node, e *edgeData) {
		d := c.data(from, to)
		d.count += e.count
		d.timed += e.timed
		d.timedSum += e.timedSum
	})
}

func (c *edgeCounts) reset() {
	for _, i := range c.taken[:c.n] {
		c.slots[i] = edgeSlot{}
	}
	c.n = 0
	c.spill = nil
}
