package dashboard

import (
	"slices"
	"sync"
	"time"

	"github.com/statepipe/statepipe"
)

// Snapshot is what the page shows, and what the JSON endpoint returns: the
// Pipelines' counters at one moment, with rates over the last few seconds
// and the throughput history. Durations are in nanoseconds in the JSON.
type Snapshot struct {
	Title string    `json:"title"`
	Time  time.Time `json:"time"`
	// Shape identifies the drawing of the graph (graph.svg?shape=...): it
	// changes when a node or an edge appears, or the labels need more room.
	Shape string `json:"shape"`

	Submitted uint64  `json:"submitted"`
	Completed uint64  `json:"completed"`
	Failed    uint64  `json:"failed"`
	Rate      float64 `json:"rate"` // requests out (completed or failed) per second, lately
	InFlight  int     `json:"inFlight"`
	Queued    int     `json:"queued"`
	Running   int     `json:"running"`
	Parked    int     `json:"parked"`
	Workers   int     `json:"workers"`

	QueueTime Timing `json:"queueTime"` // from Submit until a worker picks the request up
	RunTime   Timing `json:"runTime"`   // from that pick-up until out, parked time included

	Stages   []Stage   `json:"stages"`
	Batchers []Batcher `json:"batchers"`
	Groups   []Group   `json:"groups"` // open groups
	Nodes    []Node    `json:"nodes"`  // the graph's nodes, as Graph returns them
	Edges    []Edge    `json:"edges"`  // the transitions taken so far

	// Throughput holds one point per sample over the history span, oldest
	// first.
	Throughput []Point `json:"throughput"`
}

// Stage is one stage's counters.
type Stage struct {
	Name   string        `json:"name"`
	Runs   uint64        `json:"runs"`
	Errors uint64        `json:"errors"`
	Rate   float64       `json:"rate"` // runs per second, lately
	P50    time.Duration `json:"p50"`
	P99    time.Duration `json:"p99"`
}

// Timing summarises the durations the core measured (on a sample of the
// requests, see [statepipe.Stats]).
type Timing struct {
	Count uint64        `json:"count"`
	Avg   time.Duration `json:"avg"`
	Max   time.Duration `json:"max"`
}

// Group is one open group.
type Group struct {
	ID        uint64 `json:"id"`
	Ordered   bool   `json:"ordered"`
	Limit     int    `json:"limit"`     // its in-flight bound
	Submitted uint64 `json:"submitted"` // requests accepted
	Pending   int    `json:"pending"`   // admitted, not yet in its output
	Buffered  int    `json:"buffered"`  // in its output, not yet received
}

// Batcher is one batcher's counters.
type Batcher struct {
	Name      string            `json:"name"`
	Flushes   map[string]uint64 `json:"flushes"` // by reason: size, bytes, linger, idle, shutdown
	Total     uint64            `json:"total"`   // flushes for every reason
	Items     uint64            `json:"items"`
	Failed    uint64            `json:"failed"`
	Cancelled uint64            `json:"cancelled"`
	Parked    int               `json:"parked"`
	MeanFill  float64           `json:"meanFill"` // requests per flush
	FlushTime time.Duration     `json:"flushTime"`
	Warning   string            `json:"warning,omitempty"`
}

// Node is a node of the graph.
type Node struct {
	Name string `json:"name"`
	Kind string `json:"kind"` // stage, batch, in, done or failed
	Runs uint64 `json:"runs"`
}

// Edge is a transition taken.
type Edge struct {
	From        string        `json:"from"`
	To          string        `json:"to"`
	Count       uint64        `json:"count"`
	Rate        float64       `json:"rate"` // per second, lately
	MeanLatency time.Duration `json:"meanLatency"`
}

// Point is one sample of the throughput chart.
type Point struct {
	Time      time.Time `json:"time"`
	Completed float64   `json:"completed"` // per second since the previous point
	Failed    float64   `json:"failed"`
}

var kindNames = map[statepipe.NodeKind]string{
	statepipe.NodeStage:  "stage",
	statepipe.NodeBatch:  "batch",
	statepipe.NodeIn:     "in",
	statepipe.NodeDone:   "done",
	statepipe.NodeFailed: "failed",
}

// rateWindow is how far back rates look: long enough to be steady,
// short enough to follow a change of pace.
const rateWindow = 5 * time.Second

// sample is what a refresh keeps for rates and the chart.
type sample struct {
	t                 time.Time
	completed, failed uint64
	stages            map[string]uint64
	edges             map[[2]string]uint64
}

// sampler reads the source at most once per interval, however many pages
// are open, and keeps the samples of the history span.
type sampler struct {
	src      Source
	title    string
	interval time.Duration
	history  time.Duration
	now      func() time.Time

	mu        sync.Mutex
	last      *Snapshot
	graph     statepipe.Graph // the one last was made from
	samples   []sample        // oldest first
	points    []Point
	pointBase sample // the sample the next point is measured from
}

// snapshot returns the latest snapshot, taking a new one if the latest is
// older than half the interval, and the graph it was made from.
func (s *sampler) snapshot() (*Snapshot, statepipe.Graph) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.last != nil && now.Sub(s.last.Time) < s.interval/2 {
		return s.last, s.graph
	}
	s.last = s.take(now)
	return s.last, s.graph
}

// take reads Stats and Graph once and builds a snapshot; s.mu is held.
func (s *sampler) take(now time.Time) *Snapshot {
	st := s.src.Stats()
	g := s.src.Graph()
	s.graph = g
	cur := sample{t: now, completed: st.Completed, failed: st.Failed,
		stages: make(map[string]uint64, len(st.Stages)), edges: make(map[[2]string]uint64, len(g.Edges))}
	for _, x := range st.Stages {
		cur.stages[x.Name] = x.Runs
	}
	for _, e := range g.Edges {
		cur.edges[[2]string{e.From, e.To}] = e.Count
	}
	// A point per interval at most, however often pages ask: points
	// over shorter spans would be noise (a batch committed in one, none
	// in the next).
	if prev := s.pointBase; !prev.t.IsZero() {
		if d := now.Sub(prev.t); d >= s.interval*9/10 {
			s.points = append(s.points, Point{Time: now,
				Completed: float64(cur.completed-prev.completed) / d.Seconds(),
				Failed:    float64(cur.failed-prev.failed) / d.Seconds()})
			s.pointBase = cur
		}
	} else {
		s.pointBase = cur
	}
	s.samples = append(s.samples, cur)
	// Keep what the chart and the rates need.
	cut := now.Add(-max(s.history, rateWindow))
	if i := slices.IndexFunc(s.samples, func(x sample) bool { return !x.t.Before(cut) }); i > 0 {
		s.samples = slices.Delete(s.samples, 0, i-1) // one older than the span, for the first rate
	}
	if i := slices.IndexFunc(s.points, func(p Point) bool { return !p.Time.Before(now.Add(-s.history)) }); i > 0 {
		s.points = slices.Delete(s.points, 0, i)
	}
	base, dt := s.base(now)
	rate := func(cur, old uint64) float64 {
		if dt <= 0 || cur < old {
			return 0
		}
		return float64(cur-old) / dt
	}

	snap := &Snapshot{
		Title: s.title, Time: now,
		Submitted: st.Submitted, Completed: st.Completed, Failed: st.Failed,
		Rate:     rate(st.Completed+st.Failed, base.completed+base.failed),
		InFlight: st.InFlight, Queued: st.Queued, Running: st.Running, Parked: st.Parked, Workers: st.Workers,
		QueueTime:  timing(st.QueueTime),
		RunTime:    timing(st.RunTime),
		Groups:     make([]Group, 0, len(st.Groups)),
		Throughput: slices.Clone(s.points),
		Stages:     make([]Stage, 0, len(st.Stages)),
		Batchers:   make([]Batcher, 0, len(st.Batchers)),
		Nodes:      make([]Node, 0, len(g.Nodes)),
		Edges:      make([]Edge, 0, len(g.Edges)),
		Shape:      shapeOf(g),
	}
	for _, g := range st.Groups {
		snap.Groups = append(snap.Groups, Group{ID: g.ID, Ordered: g.Ordered, Limit: g.Limit,
			Submitted: g.Submitted, Pending: g.Pending, Buffered: g.Buffered})
	}
	for _, x := range st.Stages {
		snap.Stages = append(snap.Stages, Stage{Name: x.Name, Runs: x.Runs, Errors: x.Errors,
			Rate: rate(x.Runs, base.stages[x.Name]), P50: x.P50(), P99: x.P99()})
	}
	for _, b := range st.Batchers {
		snap.Batchers = append(snap.Batchers, batcherOf(b))
	}
	for _, n := range g.Nodes {
		snap.Nodes = append(snap.Nodes, Node{Name: n.Name, Kind: kindNames[n.Kind], Runs: n.Runs})
	}
	for _, e := range g.Edges {
		snap.Edges = append(snap.Edges, Edge{From: e.From, To: e.To, Count: e.Count,
			Rate: rate(e.Count, base.edges[[2]string{e.From, e.To}]), MeanLatency: e.MeanLatency})
	}
	return snap
}

// base returns the sample rates are measured from: the oldest within the
// rate window before now (the previous one if none is), and the seconds
// since. With one sample only there is no rate yet.
func (s *sampler) base(now time.Time) (sample, float64) {
	n := len(s.samples)
	if n < 2 {
		return sample{}, 0
	}
	i := slices.IndexFunc(s.samples[:n-1], func(x sample) bool { return now.Sub(x.t) <= rateWindow })
	if i < 0 {
		i = n - 2
	}
	b := s.samples[i]
	return b, now.Sub(b.t).Seconds()
}

func batcherOf(b statepipe.BatchStats) Batcher {
	out := Batcher{Name: b.Name, Flushes: make(map[string]uint64, len(b.Flushes)), Total: b.TotalFlushes(),
		Items: b.Items, Failed: b.Failed, Cancelled: b.Cancelled, Parked: b.Parked, MeanFill: b.MeanFill,
		FlushTime: b.FlushTime.Avg, Warning: b.Warning}
	for i, n := range b.Flushes {
		out.Flushes[statepipe.FlushReason(i).String()] = n
	}
	return out
}

func timing(d statepipe.Durations) Timing { return Timing{Count: d.Count, Avg: d.Avg, Max: d.Max} }
