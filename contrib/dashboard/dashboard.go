package dashboard

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"html/template"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/statepipe/statepipe"
)

// Source is what a Dashboard reads: a [*statepipe.Pipelines] of any data
// type has both methods.
type Source interface {
	Stats() statepipe.Stats
	Graph() statepipe.Graph
}

// Dashboard is an [http.Handler] that serves a live page for a Pipelines,
// and the same data as JSON. It is read-only and has no authentication of
// its own. Its methods are safe for concurrent use.
type Dashboard struct {
	cfg     config
	sampler *sampler
	drawing drawing
}

// New returns a dashboard for src, usually a [*statepipe.Pipelines]. It
// starts nothing: the Pipelines are read when a page or a script asks, at
// most once per refresh interval however many ask. Call [Dashboard.Run] as
// well to keep the throughput chart going while no page is open.
func New(src Source, opts ...Option) *Dashboard {
	cfg := config{title: "statepipe", refresh: time.Second, history: 5 * time.Minute}
	for _, o := range opts {
		o.apply(&cfg)
	}
	return &Dashboard{cfg: cfg, sampler: &sampler{
		src: src, title: cfg.title, interval: cfg.refresh, history: cfg.history, now: time.Now,
	}}
}

// Snapshot returns what the page shows now; it is also what stats.json
// returns. It is taken at most once per half refresh interval and shared
// by every caller in that time: do not modify it.
func (d *Dashboard) Snapshot() *Snapshot {
	s, _ := d.sampler.snapshot()
	return s
}

// Run samples the Pipelines every refresh interval until ctx ends, so that
// the throughput chart has no gaps for the time no page was open. It is
// optional: without it, samples are taken when pages ask.
func (d *Dashboard) Run(ctx context.Context) {
	t := time.NewTicker(d.cfg.refresh)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			d.Snapshot()
		case <-ctx.Done():
			return
		}
	}
}

//go:embed page
var pageFS embed.FS

var pageTemplate = template.Must(template.ParseFS(pageFS, "page/index.html"))

// ServeHTTP serves, relative to where the dashboard is mounted:
//
//	./            the page
//	./stats.json  the [Snapshot], as JSON
//	./graph.svg   the stage graph as laid out by Graphviz
//	./app.js, ./app.css  the page's script and style
//
// It answers GET and HEAD only. Mounted under a prefix, with or without
// [http.StripPrefix], it finds its files by the last element of the path;
// a request for the prefix without its final slash is redirected to it, so
// that the page's relative links resolve.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "the dashboard is read-only", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	if p == "" {
		// StripPrefix took the whole path: the page, if the request
		// ended with a slash (RequestURI is the path before StripPrefix);
		// else the page's relative links need one.
		u, _, _ := strings.Cut(r.RequestURI, "?")
		if !strings.HasSuffix(u, "/") {
			http.Redirect(w, r, path.Base(u)+"/", http.StatusMovedPermanently)
			return
		}
		p = "/"
	}
	switch name := path.Base(p); {
	case strings.HasSuffix(p, "/"):
		d.servePage(w)
	case name == "stats.json":
		d.serveJSON(w)
	case name == "graph.svg":
		d.serveSVG(w, r)
	case name == "app.js" || name == "app.css":
		http.ServeFileFS(w, r, pageFS, "page/"+name)
	default:
		http.NotFound(w, r)
	}
}

func (d *Dashboard) servePage(w http.ResponseWriter) {
	var b bytes.Buffer
	err := pageTemplate.Execute(&b, struct {
		Title   string
		Refresh int64
	}{d.cfg.title, d.cfg.refresh.Milliseconds()})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b.Bytes())
}

func (d *Dashboard) serveJSON(w http.ResponseWriter) {
	b, err := json.Marshal(d.Snapshot())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

// serveSVG draws the graph of the latest snapshot, laying it out again
// only if its shape changed; the page asks for it when the Shape of a
// snapshot changes, and writes the numbers of the snapshots into it.
func (d *Dashboard) serveSVG(w http.ResponseWriter, r *http.Request) {
	_, g := d.sampler.snapshot()
	shape, svg, err := d.drawing.get(r.Context(), g)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Statepipe-Shape", shape)
	w.Write(svg)
}
