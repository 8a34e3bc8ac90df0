// Package dashboard serves a live page for a running [statepipe.Pipelines]:
// the stage graph as run, laid out by Graphviz, with each edge's count and
// rate and each stage's runs, errors and latency written into it; the
// batchers' flushes by reason and fill; what is in flight, queued,
// running and parked; the workers and groups; and the throughput over the
// last minutes as a small chart. The same data is served as JSON.
//
//	mux := http.NewServeMux()
//	mux.Handle("/debug/pipelines/", http.StripPrefix("/debug/pipelines", dashboard.New(p)))
//	go http.ListenAndServe("127.0.0.1:6060", mux) // an internal port
//
// # Routes
//
// Relative to where it is mounted (with or without [http.StripPrefix]):
// "./" is the page, "./stats.json" the [Snapshot] the page shows,
// "./graph.svg" the drawing, and "./app.js" and "./app.css" the page's
// script and style. Everything is embedded in the program: the page loads
// nothing from elsewhere, and works with no network.
//
// # Security
//
// The dashboard is read-only (GET and HEAD; other methods get 405) and has
// no authentication of its own: it is meant for an internal or loopback
// port, like net/http/pprof. It shows stage and batcher names and counts,
// never the data of a request. To put it on a shared port, wrap it in your
// own middleware, as any [http.Handler]:
//
//	mux.Handle("/debug/pipelines/", requireAdmin(http.StripPrefix("/debug/pipelines", d)))
//
// # Cost
//
// Nothing per request through the Pipelines: the dashboard installs no
// hook and no Observer. It reads [statepipe.Pipelines.Stats] and
// [statepipe.Pipelines.Graph] at most once per refresh interval
// ([WithRefresh], default 1s), however many pages are open; a page asks
// once per interval. A refresh (Stats and Graph read, the snapshot built
// and encoded, with five minutes of history) costs about 0.2ms of CPU
// (BenchmarkRefresh): at one a second, 0.02% of a core. The graph is laid
// out again only when its shape changes (a node or an edge appears, or the
// largest count gains a digit), about 2ms each time (BenchmarkRenderSVG);
// between layouts the page writes the numbers into the drawing it has.
//
// # Drawing
//
// The layout is Graphviz's dot, run in the process through
// github.com/goccy/go-graphviz (Graphviz compiled to WebAssembly, run by
// the pure-Go wazero runtime: no cgo, nothing to install), on the output
// of [statepipe.Graph.DOT]. [RenderSVG] is exported for programs that want
// the picture as a file. Server-side rendering keeps the page small (no
// layout library in the browser) and draws the same picture `dot -Tsvg`
// would.
package dashboard
