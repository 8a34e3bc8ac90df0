package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/statepipe/statepipe/contrib/dashboard"
)

// dashServer serves the live dashboard of demo --serve: from before the
// job starts (a page that waits for it) until close, after the job.
type dashServer struct {
	url string
	srv *http.Server

	page    atomic.Pointer[dashboard.Dashboard] // nil until the job's Pipelines exist
	stopRun context.CancelFunc                  // ends the sampler
	wg      sync.WaitGroup                      // Serve and the sampler
	serve   error                               // what Serve returned, once wg is done
}

// startDashboard listens on addr and serves there until close. It prints
// the URL, with the real port when addr asks for any (":0").
func startDashboard(addr string, w io.Writer) (*dashServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--serve %s: %w", addr, err)
	}
	d := &dashServer{url: dashURL(ln.Addr().(*net.TCPAddr)), stopRun: func() {}}
	d.srv = &http.Server{Handler: d, ReadHeaderTimeout: 10 * time.Second}
	d.wg.Go(func() { d.serve = d.srv.Serve(ln) })
	fmt.Fprintf(w, "statepipe: the dashboard is at %s (serving until Ctrl-C)\n", d.url)
	if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		fmt.Fprintf(w, "statepipe: note: the dashboard has no authentication, and %s is reachable from other machines\n", addr)
	}
	return d, nil
}

// dashURL is the address to open: the loopback name for "any address".
func dashURL(a *net.TCPAddr) string {
	host := a.IP.String()
	if a.IP.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, fmt.Sprint(a.Port)) + "/"
}

// ServeHTTP serves the dashboard once the job has attached its Pipelines,
// and until then a page that reloads itself.
func (d *dashServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if page := d.page.Load(); page != nil {
		page.ServeHTTP(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Retry-After", "1")
	w.WriteHeader(http.StatusServiceUnavailable)
	io.WriteString(w, `<!doctype html><meta http-equiv="refresh" content="1"><title>statepipe demo</title><p>The demo is starting…</p>`)
}

// attach shows src's numbers from now on, sampling them every second so
// that the throughput chart has no gaps while no page is open.
func (d *dashServer) attach(src dashboard.Source, title string) {
	page := dashboard.New(src, dashboard.WithTitle(title))
	ctx, cancel := context.WithCancel(context.Background())
	d.stopRun = cancel
	d.wg.Go(func() { page.Run(ctx) })
	d.page.Store(page)
}

// attached reports whether the job attached its Pipelines.
func (d *dashServer) attached() bool { return d.page.Load() != nil }

// waitAndClose keeps serving until stop ends, unless it has already (the
// job was interrupted), then shuts the server down and joins its
// goroutines.
func (d *dashServer) waitAndClose(stop context.Context, w io.Writer) error {
	if stop.Err() == nil {
		fmt.Fprintf(w, "statepipe: the job is done; the dashboard is still at %s: Ctrl-C to stop\n", d.url)
		<-stop.Done()
	}
	return d.close()
}

// close stops serving: open requests get 5 seconds to finish.
func (d *dashServer) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := d.srv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, d.srv.Close())
	}
	d.stopRun()
	d.wg.Wait()
	if !errors.Is(d.serve, http.ErrServerClosed) {
		err = errors.Join(err, d.serve)
	}
	return err
}

// graphSVGPath puts the picture of the graph next to the database:
// statepipe-demo.db becomes statepipe-demo.svg.
func graphSVGPath(db string) string {
	return strings.TrimSuffix(db, filepath.Ext(db)) + ".svg"
}

// writeGraphSVG lays out the graph's DOT with Graphviz (in process) and
// writes it to path.
func writeGraphSVG(path, dot string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svg, err := dashboard.RenderSVG(ctx, dot)
	if err != nil {
		return err
	}
	return os.WriteFile(path, svg, 0o644)
}
