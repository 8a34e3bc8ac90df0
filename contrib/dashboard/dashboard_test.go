package dashboard_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/statepipe/statepipe"
	"github.com/statepipe/statepipe/contrib/dashboard"
)

func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	res, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

func TestStatsJSONMatchesStats(t *testing.T) {
	p, _ := newPipelines(t)
	load(t, p, 0, 500)
	open := p.NewGroup(statepipe.MaxInFlight(7)) // an open group, to be listed
	defer open.Close()
	srv := httptest.NewServer(dashboard.New(p))
	defer srv.Close()
	res, body := get(t, srv.Client(), srv.URL+"/stats.json")
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%s %s: %s", res.Status, res.Header.Get("Content-Type"), body)
	}
	var s dashboard.Snapshot
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatal(err)
	}
	want := p.Stats()
	if s.Submitted != 500 || s.Completed != want.Completed || s.Failed != want.Failed || s.Completed+s.Failed != 500 {
		t.Errorf("submitted %d completed %d failed %d; Stats says %d, %d, %d", s.Submitted, s.Completed, s.Failed,
			want.Submitted, want.Completed, want.Failed)
	}
	if s.Workers != want.Workers || s.InFlight != 0 {
		t.Errorf("workers %d (want %d), in flight %d", s.Workers, want.Workers, s.InFlight)
	}
	if len(s.Groups) != 1 || s.Groups[0].Limit != 7 || !strings.Contains(body, `"groups":[{"id":`) {
		t.Errorf("groups %+v in %s", s.Groups, body)
	}
	if s.RunTime.Count != want.RunTime.Count || s.RunTime.Max != want.RunTime.Max || !strings.Contains(body, `"runTime":{"count":`) {
		t.Errorf("run time %+v, Stats %+v", s.RunTime, want.RunTime)
	}
	runs := map[string]uint64{}
	for _, st := range s.Stages {
		runs[st.Name] = st.Runs
	}
	for _, st := range want.Stages {
		if runs[st.Name] != st.Runs {
			t.Errorf("stage %s: %d runs in the JSON, %d in Stats", st.Name, runs[st.Name], st.Runs)
		}
	}
	if len(s.Batchers) != 1 || s.Batchers[0].Name != "bulk" || s.Batchers[0].Items != want.Batchers[0].Items ||
		s.Batchers[0].Total != want.Batchers[0].TotalFlushes() {
		t.Errorf("batchers %+v, Stats %+v", s.Batchers, want.Batchers)
	}
	var reasons uint64
	for _, n := range s.Batchers[0].Flushes {
		reasons += n
	}
	if reasons != s.Batchers[0].Total {
		t.Errorf("flushes by reason add up to %d, total %d", reasons, s.Batchers[0].Total)
	}
	counts := map[string]uint64{}
	for _, e := range s.Edges {
		counts[e.From+"->"+e.To] = e.Count
	}
	for _, e := range p.Graph().Edges {
		if counts[e.From+"->"+e.To] != e.Count {
			t.Errorf("edge %s->%s: %d in the JSON, %d in Graph", e.From, e.To, counts[e.From+"->"+e.To], e.Count)
		}
	}
	// 0..499: 250 odd, of which the multiples of 7 fail in Check.
	if got := counts["Check->(failed)"]; got != 36 {
		t.Errorf("Check->(failed) = %d, want 36", got)
	}
}

// fakeSource is a Source whose numbers the test sets, counting its reads.
type fakeSource struct {
	stats statepipe.Stats
	graph statepipe.Graph
	reads int
}

func (f *fakeSource) Stats() statepipe.Stats { f.reads++; return f.stats }
func (f *fakeSource) Graph() statepipe.Graph { return f.graph }

func (f *fakeSource) set(completed uint64) {
	f.stats.Completed = completed
	f.stats.Stages = []statepipe.StageStats{{Name: "Start", Runs: completed}}
	f.graph = statepipe.Graph{
		Nodes: []statepipe.GraphNode{{Name: "(in)", Kind: statepipe.NodeIn}, {Name: "Start", Kind: statepipe.NodeStage, Runs: completed},
			{Name: "(done)", Kind: statepipe.NodeDone}},
		Edges: []statepipe.GraphEdge{{From: "(in)", To: "Start", Count: completed}, {From: "Start", To: "(done)", Count: completed}},
	}
}

// TestRatesAndHistory drives the sampler with its own clock: 100 requests
// a second for 20 seconds, then none.
func TestRatesAndHistory(t *testing.T) {
	src := &fakeSource{}
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d := dashboard.New(src, dashboard.WithHistory(10*time.Second))
	dashboard.SetClock(d, func() time.Time { return clock })
	var s *dashboard.Snapshot
	for i := range 21 {
		src.set(uint64(100 * i))
		s = d.Snapshot()
		clock = clock.Add(time.Second)
	}
	if s.Rate != 100 || s.Stages[0].Rate != 100 || s.Edges[1].Rate != 100 {
		t.Errorf("rate %v, stage rate %v, edge rate %v; want 100 each", s.Rate, s.Stages[0].Rate, s.Edges[1].Rate)
	}
	// The chart keeps the history span: the points of the last 10s.
	if n := len(s.Throughput); n != 11 {
		t.Errorf("%d points in a 10s history sampled every second, want 11", n)
	}
	for _, p := range s.Throughput {
		if p.Completed != 100 {
			t.Errorf("point %v: %v/s, want 100", p.Time, p.Completed)
		}
	}
	// Idle: the rate falls to 0 within the rate window (5s).
	for range 6 {
		s = d.Snapshot()
		clock = clock.Add(time.Second)
	}
	if s.Rate != 0 || s.Throughput[len(s.Throughput)-1].Completed != 0 {
		t.Errorf("idle: rate %v, last point %v", s.Rate, s.Throughput[len(s.Throughput)-1])
	}
}

// Many pages open at once read Stats once per refresh interval, not once
// each.
func TestStatsReadOncePerRefresh(t *testing.T) {
	src := &fakeSource{}
	src.set(0)
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d := dashboard.New(src, dashboard.WithRefresh(time.Second))
	dashboard.SetClock(d, func() time.Time { return clock })
	srv := httptest.NewServer(d)
	defer srv.Close()
	for range 10 {
		get(t, srv.Client(), srv.URL+"/stats.json")
	}
	if src.reads != 1 {
		t.Errorf("10 requests within one interval read Stats %d times, want 1", src.reads)
	}
	clock = clock.Add(time.Second)
	get(t, srv.Client(), srv.URL+"/stats.json")
	if src.reads != 2 {
		t.Errorf("a request an interval later: %d reads, want 2", src.reads)
	}
}

func TestMountedUnderPrefix(t *testing.T) {
	p, _ := newPipelines(t)
	d := dashboard.New(p, dashboard.WithTitle("orders"))
	mux := http.NewServeMux()
	mux.Handle("/debug/pipelines/", http.StripPrefix("/debug/pipelines", d))
	mux.Handle("/trim/", http.StripPrefix("/trim/", d)) // the page's path is empty then
	mux.Handle("/trim", http.StripPrefix("/trim", d))
	mux.Handle("/plain/", d) // no StripPrefix: the last element of the path counts
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := srv.Client()
	for _, base := range []string{"/debug/pipelines/", "/plain/", "/trim/"} {
		res, body := get(t, c, srv.URL+base)
		if res.StatusCode != 200 || !strings.Contains(body, "<title>orders</title>") || !strings.Contains(body, `src="app.js"`) {
			t.Errorf("%s: %s\n%s", base, res.Status, body)
		}
		for _, f := range []struct{ name, ctype, has string }{
			{"stats.json", "application/json", `"stages"`},
			{"graph.svg", "image/svg+xml", "<svg"},
			{"app.js", "text/javascript; charset=utf-8", "stats.json"},
			{"app.css", "text/css; charset=utf-8", ".graph"},
		} {
			res, body := get(t, c, srv.URL+base+f.name)
			if res.StatusCode != 200 || res.Header.Get("Content-Type") != f.ctype || !strings.Contains(body, f.has) {
				t.Errorf("%s%s: %s %q, %d bytes", base, f.name, res.Status, res.Header.Get("Content-Type"), len(body))
			}
		}
		if res, _ := get(t, c, srv.URL+base+"secret"); res.StatusCode != 404 {
			t.Errorf("%ssecret: %s, want 404", base, res.Status)
		}
	}
	// The prefix without its slash leads to the page, whose relative
	// links then resolve under the prefix.
	res, body := get(t, c, srv.URL+"/trim")
	if res.StatusCode != 200 || res.Request.URL.Path != "/trim/" || !strings.Contains(body, "<title>orders</title>") {
		t.Errorf("/trim: %s at %s", res.Status, res.Request.URL.Path)
	}
	// Read-only.
	res, err := c.Post(srv.URL+"/debug/pipelines/stats.json", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %s, Allow %q", res.Status, res.Header.Get("Allow"))
	}
}

// The drawing names every stage, and is laid out again only when the
// graph's shape changes, not when its numbers do.
func TestGraphDrawnWhenShapeChanges(t *testing.T) {
	p, _ := newPipelines(t)
	d := dashboard.New(p)
	var mu sync.Mutex
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	dashboard.SetClock(d, func() time.Time { mu.Lock(); defer mu.Unlock(); return clock })
	srv := httptest.NewServer(d)
	defer srv.Close()
	svg := func() (string, string) {
		// A refresh later: the drawing is of a new snapshot.
		mu.Lock()
		clock = clock.Add(time.Second)
		mu.Unlock()
		res, body := get(t, srv.Client(), srv.URL+"/graph.svg")
		if res.StatusCode != 200 {
			t.Fatalf("graph.svg: %s %s", res.Status, body)
		}
		return res.Header.Get("X-Statepipe-Shape"), body
	}
	shape0, body := svg()
	for _, name := range orderStages {
		if !strings.Contains(body, "<title>"+name+"</title>") {
			t.Errorf("the drawing lacks stage %s", name)
		}
	}
	load(t, p, 0, 10) // new edges: a new shape
	shape1, body := svg()
	if shape1 == shape0 || !strings.Contains(body, "<title>bulk</title>") || dashboard.Renders(d) != 2 {
		t.Errorf("after the first load: shape %s (was %s), %d renders, batcher drawn: %v", shape1, shape0,
			dashboard.Renders(d), strings.Contains(body, "<title>bulk</title>"))
	}
	load(t, p, 10, 20) // same edges, counts still two digits at most
	if shape2, _ := svg(); shape2 != shape1 || dashboard.Renders(d) != 2 {
		t.Errorf("same shape drawn again: shape %s (was %s), %d renders", shape2, shape1, dashboard.Renders(d))
	}
	if s := d.Snapshot(); s.Shape != shape1 {
		t.Errorf("the snapshot's shape %s is not the drawing's %s", s.Shape, shape1)
	}
}

func TestRenderSVGRejectsBadDOT(t *testing.T) {
	if _, err := dashboard.RenderSVG(t.Context(), "digraph { a -> "); err == nil {
		t.Error("no error for a DOT text cut short")
	}
	svg, err := dashboard.RenderSVG(t.Context(), statepipe.Graph{
		Nodes: []statepipe.GraphNode{{Name: "Start", Kind: statepipe.NodeStage}},
	}.DOT())
	if err != nil || !strings.Contains(string(svg), "<title>Start</title>") {
		t.Errorf("%v\n%s", err, svg)
	}
}

// Pages asking more often than the refresh interval (here every 600ms,
// which takes a new sample each time) add no more than one chart point
// per interval: points over shorter spans would be noise.
func TestChartOnePointPerInterval(t *testing.T) {
	src := &fakeSource{}
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d := dashboard.New(src, dashboard.WithRefresh(time.Second))
	dashboard.SetClock(d, func() time.Time { return clock })
	var s *dashboard.Snapshot
	for i := range 11 { // 6 seconds
		src.set(uint64(60 * i))
		s = d.Snapshot()
		clock = clock.Add(600 * time.Millisecond)
	}
	if src.reads != 11 {
		t.Fatalf("%d reads for 11 snapshots 600ms apart", src.reads)
	}
	if n := len(s.Throughput); n != 5 {
		t.Errorf("%d points over 6s, want 5 (one per 1.2s: the first sample at least 900ms after the last point)", n)
	}
	for _, p := range s.Throughput {
		if p.Completed != 100 {
			t.Errorf("point %v: %v/s, want 100", p.Time, p.Completed)
		}
	}
}

// The page's DOT leaves each edge label room for what the page writes
// there (count, then rate and mean latency), whatever the core's DOT put
// in the label; a change of the core's edge statements that this misses
// would leave the page's numbers overlapping the drawing.
func TestPageDOTMakesRoomForLiveLabels(t *testing.T) {
	p, _ := newPipelines(t)
	load(t, p, 0, 1234)
	g := p.Graph()
	dot := dashboard.PageDOT(g)
	edges := 0
	for _, l := range strings.Split(dot, "\n") {
		if !strings.Contains(l, " -> ") {
			continue
		}
		edges++
		if !strings.Contains(l, `label="00000\n9,999/s · 999µs"`) {
			t.Errorf("edge without room for its live label: %s", l)
		}
	}
	if edges != len(g.Edges) || !strings.Contains(dot, "node [width=") {
		t.Errorf("%d edge statements for %d edges:\n%s", edges, len(g.Edges), dot)
	}
	if _, err := dashboard.RenderSVG(t.Context(), dot); err != nil {
		t.Error(err)
	}
}
