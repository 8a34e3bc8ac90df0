package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// demoStages are the demo machine's stages.
var demoStages = []string{"Start", "ParseGo", "ReadOther", "Hash", "Store", "Committed"}

var dashboardLine = regexp.MustCompile(`statepipe: the dashboard is at (http://127\.0\.0\.1:[1-9][0-9]*/) \(serving until Ctrl-C\)\n`)

// waitOutput waits until re matches what w holds, and returns the match.
func waitOutput(t *testing.T, w *syncBuffer, re *regexp.Regexp) []string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m := re.FindStringSubmatch(w.String()); m != nil {
			return m
		}
	}
	t.Fatalf("no %q in:\n%s", re, w.String())
	return nil
}

func fetch(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

// demo --serve 127.0.0.1:0 prints the URL with its real port; the page
// there shows the demo's six stages and its sqlite batcher, during the run
// and after it, until Ctrl-C.
func TestDemoServeShowsTheMachine(t *testing.T) {
	root, paths := writeTree(t, 400)
	db := filepath.Join(t.TempDir(), "demo.db")
	var out, errb syncBuffer
	stop, interrupt := context.WithCancel(context.Background())
	defer interrupt()
	e := env{stdout: &out, stderr: &errb, stop: stop, abort: context.Background()}
	cfg, err := parseDemoFlags([]string{"--serve", "127.0.0.1:0", "--src", root, "--db", db, "--batch", "50"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// During the run, with the second batch committed, the page has
	// numbers of the run under way.
	var during struct {
		status int
		json   string
	}
	cfg.afterFlush = func(id int64) {
		if id == 2 {
			m := dashboardLine.FindStringSubmatch(errb.String())
			if m == nil {
				return
			}
			// Not fetch: this is the flush's goroutine, where t.Fatal
			// must not be called.
			res, err := http.Get(m[1] + "stats.json")
			if err != nil {
				t.Error(err)
				return
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			during.status, during.json = res.StatusCode, string(b)
		}
	}
	code := make(chan int, 1)
	go func() {
		err := runDemo(e, cfg)
		if err != nil {
			t.Error(err)
		}
		code <- exitOK
	}()

	url := waitOutput(t, &errb, dashboardLine)[1]
	// After the run, it keeps serving.
	waitOutput(t, &errb, regexp.MustCompile(`the job is done; the dashboard is still at `+regexp.QuoteMeta(url)))
	if !strings.Contains(out.String(), "committed in") {
		t.Fatalf("the summary is not out yet:\n%s", out.String())
	}
	var mid struct {
		Submitted, Completed uint64
		Stages               []struct{ Name string }
	}
	if err := json.Unmarshal([]byte(during.json), &mid); err != nil || during.status != 200 ||
		mid.Submitted == 0 || mid.Completed >= uint64(len(paths)) || len(mid.Stages) != len(demoStages) {
		t.Errorf("stats.json during the run: %d %v %+v\n%s", during.status, err, mid, during.json)
	}
	status, page := fetch(t, url)
	if status != 200 || !strings.Contains(page, "statepipe demo: "+root) {
		t.Errorf("page: %d\n%s", status, page)
	}
	var s struct {
		Completed uint64
		Stages    []struct{ Name string }
		Batchers  []struct {
			Name  string
			Items uint64
		}
	}
	// A snapshot is kept for up to half a refresh (500ms): the last of
	// the run comes within that.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, js := fetch(t, url+"stats.json")
		if err := json.Unmarshal([]byte(js), &s); err != nil {
			t.Fatal(err)
		}
		if s.Completed == uint64(len(paths)) || time.Now().After(deadline) {
			break
		}
	}
	var names []string
	for _, st := range s.Stages {
		names = append(names, st.Name)
	}
	for _, want := range demoStages {
		if !slices.Contains(names, want) {
			t.Errorf("stats.json lacks stage %s: %v", want, names)
		}
	}
	if s.Completed != uint64(len(paths)) || len(s.Batchers) != 1 || s.Batchers[0].Name != "sqlite" || s.Batchers[0].Items != uint64(len(paths)) {
		t.Errorf("completed %d of %d, batchers %+v", s.Completed, len(paths), s.Batchers)
	}
	_, svg := fetch(t, url+"graph.svg")
	for _, want := range append(demoStages, "sqlite") {
		if !strings.Contains(svg, "<title>"+want+"</title>") {
			t.Errorf("the drawing lacks %s", want)
		}
	}

	// And in a real browser, where the page draws what it fetched.
	if dom, ok := browserDOM(t, url); ok {
		for _, want := range append(demoStages, "sqlite") {
			if !strings.Contains(dom, "<title>"+want+"</title>") {
				t.Errorf("the page in the browser does not draw %s", want)
			}
		}
		if !strings.Contains(dom, fmt.Sprintf(`id="completed">%s<`, thousands(len(paths)))) {
			t.Errorf("the page in the browser does not show %d completed", len(paths))
		}
	}

	interrupt() // Ctrl-C: the run had ended, so this only stops the server (runDemo returns nil)
	select {
	case <-code:
	case <-time.After(10 * time.Second):
		t.Fatal("still serving 10s after Ctrl-C")
	}
	if _, err := http.Get(url); err == nil {
		t.Error("still serving after the command returned")
	}
}

// The demo writes the stage graph, drawn by Graphviz, next to the
// database, and says where.
func TestDemoWritesGraphSVG(t *testing.T) {
	root, _ := writeTree(t, 20)
	db := filepath.Join(t.TempDir(), "run.db")
	e, out, errb := testEnv()
	if code := run([]string{"demo", "--src", root, "--db", db}, e); code != exitOK {
		t.Fatalf("exit %d: %s", code, errb)
	}
	svgPath := strings.TrimSuffix(db, ".db") + ".svg"
	if !strings.Contains(out.String(), "the stage graph as run, drawn by Graphviz: "+svgPath+"\n") {
		t.Errorf("the summary does not say where the picture is:\n%s", out)
	}
	svg, err := os.ReadFile(svgPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range append(demoStages, "sqlite", "(in)", "(done)") {
		if !strings.Contains(string(svg), "<title>"+want+"</title>") {
			t.Errorf("%s lacks %s", svgPath, want)
		}
	}
}

func TestDemoServeRefusesABadAddress(t *testing.T) {
	root, _ := writeTree(t, 0)
	e, _, errb := testEnv()
	if code := run([]string{"demo", "--serve", "127.0.0.1:bogus", "--src", root, "--db", filepath.Join(t.TempDir(), "d.db")}, e); code != exitFailed ||
		!strings.Contains(errb.String(), "--serve 127.0.0.1:bogus") {
		t.Errorf("exit %d: %s", code, errb)
	}
}

// browserDOM loads url in headless Chromium, lets its script run for a
// few seconds, and returns the page as it is then; false if Chromium is
// not installed.
func browserDOM(t *testing.T, url string) (string, bool) {
	t.Helper()
	const chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Logf("no browser: %s is missing (apt-get install chromium); the page is not loaded in a browser", chromium)
		return "", false
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--virtual-time-budget=3000", "--dump-dom", url)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", chromium, err, stderr.String())
	}
	return string(out), true
}

// thousands writes n as the page does: 1,234.
func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
