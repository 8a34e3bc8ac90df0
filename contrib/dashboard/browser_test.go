package dashboard_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/statepipe/statepipe/contrib/dashboard"
)

// chromium is where Debian's package puts the browser; .ci/run installs it.
const chromium = "/usr/bin/chromium"

// browser starts a headless Chromium for the test and returns its context;
// it skips the test if Chromium is not installed.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("no browser: %s is missing (apt-get install chromium); the page is not tested in a browser", chromium)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
		// The machine has no network: without these, Chromium tries its
		// services at every start.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Second)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelBrowser() // closes the browser and waits for it
		cancelAlloc()
		cancel()
	})
	if err := chromedp.Do(bctx); err != nil { // starts the browser
		t.Fatalf("starting %s: %v", chromium, err)
	}
	return bctx
}

// waitFor evaluates the JavaScript expression cond in the page until it is
// true, failing the test with what show evaluates to if it never is.
func waitFor(t *testing.T, ctx context.Context, what, cond, show string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](cond))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			got, _ := chromedp.Run(ctx, chromedp.Evaluate[string](show))
			t.Fatalf("%s: not after 20s; the page shows %q", what, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPageInBrowser loads the page in headless Chromium while the
// Pipelines work, and checks that it names every stage and the batcher,
// that its counts are those of Stats, and that they follow more work.
func TestPageInBrowser(t *testing.T) {
	ctx := browser(t)
	p, m := newPipelines(t)
	m.release = make(chan struct{})
	srv := httptest.NewServer(dashboard.New(p, dashboard.WithRefresh(200*time.Millisecond)))
	defer srv.Close()

	// Under load: flushes wait for release, so work stays in flight while
	// the page loads.
	done := make(chan struct{})
	var loading, releasing sync.WaitGroup
	loading.Go(func() { load(t, p, 0, 300); close(done) })
	stopRelease := make(chan struct{})
	releasing.Go(func() {
		for {
			select {
			case m.release <- struct{}{}:
				time.Sleep(20 * time.Millisecond)
			case <-stopRelease:
				return
			}
		}
	})
	defer func() {
		close(stopRelease)
		releasing.Wait()
		close(m.release) // if the test failed half way, the flushes left go through
		loading.Wait()
	}()

	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/")); err != nil {
		t.Fatal(err)
	}
	const body = `document.body.innerText`
	graphHas := func(name string) string {
		return fmt.Sprintf(`[...document.querySelectorAll("#graph g.node title")].some(e => e.textContent === %q)`, name)
	}
	for _, name := range append(orderStages, "bulk", "(in)") {
		waitFor(t, ctx, "the graph shows "+name, graphHas(name), `document.getElementById("graph").textContent`)
	}
	waitFor(t, ctx, "the page shows in-flight work", `Number(document.getElementById("inFlight").textContent.replace(/,/g, "")) > 0 || `+
		`Number(document.getElementById("completed").textContent.replace(/,/g, "")) > 0`, body)
	<-done

	// Idle now: Stats is exact, and the page must come to show it.
	checkCounts := func(round string) {
		t.Helper()
		st := p.Stats()
		waitFor(t, ctx, round+": completed = Stats().Completed = "+strconv.FormatUint(st.Completed, 10),
			fmt.Sprintf(`document.getElementById("completed").textContent.replace(/,/g, "") === "%d"`, st.Completed),
			`document.getElementById("completed").textContent`)
		waitFor(t, ctx, round+": failed", fmt.Sprintf(`document.getElementById("failed").textContent.replace(/,/g, "") === "%d"`, st.Failed),
			`document.getElementById("failed").textContent`)
		var start uint64
		for _, s := range st.Stages {
			if s.Name == "Start" {
				start = s.Runs
			}
		}
		// The Start node of the drawing carries its runs.
		waitFor(t, ctx, round+": the Start node's runs",
			fmt.Sprintf(`[...document.querySelectorAll("#graph g.node")].some(g => g.querySelector("title").textContent === "Start" && `+
				`g.textContent.replace(/,/g, "").includes("%d runs"))`, start),
			`[...document.querySelectorAll("#graph g.node")].map(g => g.textContent).join(" | ")`)
	}
	checkCounts("after 300")
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](body))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range orderStages {
		if !strings.Contains(text, name) {
			t.Errorf("the page's text lacks stage %s", name)
		}
	}

	load(t, p, 300, 1000)
	checkCounts("after 1000")
	edge, err := chromedp.Run(ctx, chromedp.Evaluate[string](
		`[...document.querySelectorAll("#graph g.edge")].filter(g => g.querySelector("title").textContent === "(in)->Start").map(g => [...g.querySelectorAll("text")].map(t => t.textContent).join(" | ")).join()`))
	if err != nil {
		t.Fatal(err)
	}
	if out := os.Getenv("DASHBOARD_SCREENSHOT"); out != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.HasPrefix(edge, "1,000 | ") || !strings.Contains(edge, "/s") {
		t.Errorf("the edge (in)->Start reads %q, want 1,000 with its rate", edge)
	}
}
